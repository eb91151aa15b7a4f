"""SLURM argv builders and parsers, on output recorded from the test cluster (tests/data/slurm)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.x2c.schedulers.conftest import ScriptedRunner
from x2c.config import SchedulerConfig
from x2c.errors import SchedulerOutputError
from x2c.schedulers.base import JobId, JobSpec, JobState, walltime_hms
from x2c.schedulers.slurm import (
    DEFAULT_MAX_ARRAY_SIZE,
    SLURM_STATES,
    SlurmScheduler,
    array_task,
    is_invalid_job_id,
    map_slurm_state,
    parse_max_array_size,
    parse_sacct,
    parse_sbatch_id,
    parse_squeue,
    sbatch_argv,
    squeue_argv,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "slurm"

# Every state word in squeue(1)/sacct(1) "JOB STATE CODES" and where x2c puts it.
EVERY_STATE = [
    ("BOOT_FAIL", JobState.BOOT_FAIL),
    ("CANCELLED", JobState.CANCELLED),
    ("CANCELLED by 0", JobState.CANCELLED),
    ("CANCELLED by 1000", JobState.CANCELLED),
    ("COMPLETED", JobState.COMPLETED),
    ("COMPLETED+", JobState.COMPLETED),
    ("CONFIGURING", JobState.PENDING),
    ("COMPLETING", JobState.COMPLETING),
    ("DEADLINE", JobState.DEADLINE),
    ("FAILED", JobState.FAILED),
    ("NODE_FAIL", JobState.NODE_FAIL),
    ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
    ("PENDING", JobState.PENDING),
    ("PREEMPTED", JobState.PREEMPTED),
    ("RUNNING", JobState.RUNNING),
    ("RESV_DEL_HOLD", JobState.PENDING),
    ("REQUEUE_FED", JobState.PENDING),
    ("REQUEUE_HOLD", JobState.PENDING),
    ("REQUEUED", JobState.REQUEUED),
    ("RESIZING", JobState.RUNNING),
    ("REVOKED", JobState.CANCELLED),
    ("SIGNALING", JobState.COMPLETING),
    ("SPECIAL_EXIT", JobState.FAILED),
    ("STAGE_OUT", JobState.COMPLETING),
    ("STOPPED", JobState.SUSPENDED),
    ("SUSPENDED", JobState.SUSPENDED),
    ("TIMEOUT", JobState.TIMEOUT),
    ("BRAND_NEW_STATE", JobState.UNKNOWN),
    ("", JobState.UNKNOWN),
]


@pytest.mark.parametrize(("native", "state"), EVERY_STATE)
def test_every_slurm_state_is_mapped(native: str, state: JobState) -> None:
    assert map_slurm_state(native) is state


def test_the_table_covers_every_documented_word() -> None:
    documented = {n.split(" ")[0].rstrip("+") for n, s in EVERY_STATE if s is not JobState.UNKNOWN}
    assert documented == set(SLURM_STATES)


@pytest.mark.parametrize("state", list(JobState))
def test_only_completed_is_success_and_undecided_states_are_not_final(state: JobState) -> None:
    assert state.is_success == (state is JobState.COMPLETED)
    if state in (JobState.UNKNOWN, JobState.LEFT_QUEUE, JobState.PENDING, JobState.RUNNING):
        assert not state.is_final


@pytest.mark.parametrize(
    ("text", "job_id"),
    [((DATA / "sbatch_parsable.txt").read_text(), "5"), ("123;cluster\n", "123"), ("42", "42")],
)
def test_parse_sbatch_id(text: str, job_id: str) -> None:
    assert parse_sbatch_id(text) == job_id


@pytest.mark.parametrize("text", ["", "Submitted batch job\n", "sbatch: error: nope\n"])
def test_parse_sbatch_id_rejects_garbage(text: str) -> None:
    with pytest.raises(SchedulerOutputError):
        parse_sbatch_id(text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "squeue_states.txt",
            {
                "5": (JobState.COMPLETED, ""),
                "6": (JobState.FAILED, "NonZeroExitCode"),
                "7": (JobState.SUSPENDED, ""),
                "8": (JobState.PENDING, "JobHeldUser"),
                "9": (JobState.CANCELLED, "Resources"),
            },
        ),
        (
            "squeue_running.txt",
            {
                "12": (JobState.RUNNING, ""),
                "13": (JobState.RUNNING, ""),
                "14": (JobState.PENDING, "Resources"),
                "15": (JobState.PENDING, "Priority"),
            },
        ),
        ("squeue_timeout.txt", {"127": (JobState.TIMEOUT, "TimeLimit")}),
    ],
)
def test_parse_recorded_squeue(name: str, expected: dict[str, tuple[JobState, str]]) -> None:
    parsed = parse_squeue((DATA / name).read_text())
    assert {k: (v.state, v.reason) for k, v in parsed.items()} == expected
    assert all(v.native for v in parsed.values())


def test_parse_squeue_rejects_a_foreign_format() -> None:
    with pytest.raises(SchedulerOutputError):
        parse_squeue("  JOBID PARTITION NAME USER ST TIME NODES NODELIST(REASON)\n")


def test_invalid_job_id_is_recognised_from_the_recorded_stderr() -> None:
    assert is_invalid_job_id((DATA / "squeue_invalid_id.stderr").read_text())
    assert not is_invalid_job_id("squeue: error: Unable to contact slurm controller")


@pytest.mark.parametrize(
    ("line", "state", "code"),
    [
        ("101|COMPLETED|0:0|None", JobState.COMPLETED, 0),
        ("102|FAILED|3:0|NonZeroExitCode", JobState.FAILED, 3),
        ("103|CANCELLED by 0|0:15|None", JobState.CANCELLED, 0),
        ("104|TIMEOUT|0:0|TimeLimit", JobState.TIMEOUT, 0),
        ("105|OUT_OF_MEMORY|0:125|OutOfMemory", JobState.OUT_OF_MEMORY, 0),
        ("106|PENDING|0:0|Priority", JobState.PENDING, 0),
    ],
)
def test_parse_sacct(line: str, state: JobState, code: int) -> None:
    status = parse_sacct(line + "\n")[JobId(line.split("|")[0])]
    assert (status.state, status.exit_code) == (state, code)


def test_sbatch_argv_carries_every_option_as_one_element() -> None:
    spec = JobSpec(
        name="fs6 hippo; rm -rf /",
        script_path="/w/it's here/job.sh",
        workdir="/w/it's here",
        stdout_path="/w/it's here/job.log",
        exit_marker="/w/it's here/exit",
        tag="fs6-hippo/XNAT_E1/run-1",
        cpus=4,
        mem_mb=8000,
        walltime_s=90061,
        env=("PATH", "HOME", "FS_LICENSE"),
    )
    cfg = SchedulerConfig(kind="slurm", partition="debug", account="lab", extra_args=("--qos=low",))
    assert sbatch_argv(spec, cfg) == [
        "sbatch",
        "--parsable",
        "--job-name=fs6 hippo; rm -rf /",
        "--output=/w/it's here/job.log",
        "--chdir=/w/it's here",
        "--cpus-per-task=4",
        "--export=PATH,HOME,FS_LICENSE",
        "--comment=fs6-hippo/XNAT_E1/run-1",
        "--mem=8000M",
        "--time=1-01:01:01",
        "--partition=debug",
        "--account=lab",
        "--qos=low",
        "/w/it's here/job.sh",
    ]


def test_squeue_argv_asks_once_for_all_ids() -> None:
    argv = squeue_argv([JobId("1"), JobId("22"), JobId("333_4")])
    assert argv[-2:] == ["-j", "1,22,333_4"]
    assert "--states=all" in argv
    assert "--array" in argv, "pending array tasks one per line (333_4), never 333_[4-9]"


@pytest.mark.parametrize(
    ("size", "throttle", "flag"), [(30, 0, "--array=0-29"), (2, 5, "--array=0-1%5")]
)
def test_an_array_is_one_sbatch_with_its_range_and_throttle(
    size: int, throttle: int, flag: str
) -> None:
    spec = JobSpec("x2c-demo-array", "/w/a/array.sh", "/w/a", "/w/a/%a.log", "", tag="x2c.array.t")
    argv = sbatch_argv(replace(spec, array=size, array_throttle=throttle), SchedulerConfig())
    assert [a for a in argv if a.startswith("--array")] == [flag]
    assert "--output=/w/a/%a.log" in argv and argv[-1] == "/w/a/array.sh"
    assert not any(a.startswith("--array") for a in sbatch_argv(spec, SchedulerConfig()))


def test_array_tasks_are_polled_one_per_line() -> None:
    """Recorded from the test cluster (sbatch --array=0-3%2): with ``--array`` each pending task
    has its own line; without it they collapse into ``2192_[1-3%2]`` and a poll for 2192_2
    would see nothing."""
    wanted = [JobId(f"2192_{i}") for i in range(4)]
    listed = parse_squeue((DATA / "squeue_array.txt").read_text())
    assert [listed[j].state for j in wanted] == [JobState.RUNNING] + [JobState.PENDING] * 3
    collapsed = parse_squeue((DATA / "squeue_array_collapsed.txt").read_text())
    assert not set(wanted[1:]) & set(collapsed)
    runner = ScriptedRunner({"squeue": (0, (DATA / "squeue_array.txt").read_text(), "")})
    polled = SlurmScheduler(runner, SchedulerConfig(kind="slurm"), accounting=False).poll(wanted)
    assert {s.state for s in polled.values()} == {JobState.RUNNING, JobState.PENDING}
    assert "--array" in runner.calls[0]


def test_max_array_size_is_read_once_from_scontrol() -> None:
    assert parse_max_array_size((DATA / "scontrol_show_config.txt").read_text()) == 1001
    assert parse_max_array_size("ClusterName = x\n") == DEFAULT_MAX_ARRAY_SIZE
    runner = ScriptedRunner(
        {"scontrol": (0, "MaxArraySize            = 40\nMaxJobCount = 9\n", "")}
    )
    sched = SlurmScheduler(runner, SchedulerConfig(kind="slurm"))
    assert sched.max_array_size == 40 and sched.max_array_size == 40
    assert runner.calls == [["scontrol", "show", "config"]]
    down = SlurmScheduler(ScriptedRunner({"scontrol": (1, "", "unreachable")}), SchedulerConfig())
    assert down.max_array_size == DEFAULT_MAX_ARRAY_SIZE


def test_an_array_task_is_found_by_the_arrays_tag_and_its_index() -> None:
    listing = (
        "".join(
            f"500_{i}|{state}|x2c-demo-array|x2c.array.demo.ab|None\n"
            for i, state in enumerate(["RUNNING", "PENDING", "PENDING"])
        )
        + "501|RUNNING|x2c-demo-E1|x2c.demo.E1.cd|None\n"
    )
    runner = ScriptedRunner({"squeue": (0, listing, "")})
    sched = SlurmScheduler(runner, SchedulerConfig(kind="slurm"))
    [task] = sched.find(array_task("x2c.array.demo.ab", 1))
    assert (task.job_id, task.status.state) == ("500_1", JobState.PENDING)
    assert [f.job_id for f in sched.find("x2c.array.demo.ab")] == ["500_0", "500_1", "500_2"]
    assert sched.find(array_task("x2c.array.demo.ab", 3)) == []
    assert [f.job_id for f in sched.find("x2c.demo.E1.cd")] == ["501"]
    assert all("--array" in call for call in runner.calls)


@pytest.mark.parametrize(("s", "hms"), [(0, "00:00:00"), (61, "00:01:01"), (86400, "1-00:00:00")])
def test_walltime_hms(s: int, hms: str) -> None:
    assert walltime_hms(s) == hms


def test_accounting_sites_ask_sacct_only_about_jobs_squeue_no_longer_lists() -> None:
    runner = ScriptedRunner(
        {
            "squeue": (0, "11|RUNNING|a|t|None\n", ""),
            "sacct": (0, "12|FAILED|3:0|NonZeroExitCode\n", ""),
        }
    )
    sched = SlurmScheduler(runner, SchedulerConfig(kind="slurm"), accounting=True)
    polled = sched.poll([JobId("11"), JobId("12"), JobId("13")])
    assert [(s.state, s.exit_code) for s in polled.values()] == [
        (JobState.RUNNING, None),
        (JobState.FAILED, 3),
        (JobState.LEFT_QUEUE, None),
    ]
    assert [c[0] for c in runner.calls] == ["squeue", "sacct"]
    assert runner.calls[1][-1] == "12,13"


def test_accounting_is_detected_once() -> None:
    off = ScriptedRunner({"sacct": (1, "", "Slurm accounting storage is disabled\n")})
    sched = SlurmScheduler(off, SchedulerConfig(kind="slurm"))
    assert sched.accounting is False and sched.accounting is False
    assert len(off.calls) == 1
    on = SlurmScheduler(ScriptedRunner({"sacct": (0, "", "")}), SchedulerConfig(kind="slurm"))
    assert on.accounting is True
