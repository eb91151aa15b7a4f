"""Grid Engine argv builders and parsers, on samples written from its documentation and on output
recorded from the real Grid Engine 8.1.9 of the test cluster (tests/data/sge/recorded)."""

from __future__ import annotations

import pytest

from tests.x2c.schedulers.conftest import DATA, ScriptedRunner
from x2c.config import SchedulerConfig
from x2c.errors import RemoteCommandError, SchedulerOutputError, SubmissionError
from x2c.schedulers.base import JobId, JobSpec, JobState
from x2c.schedulers.sge import (
    SgeScheduler,
    is_unknown_job,
    map_sge_state,
    parse_qstat_xml,
    parse_qsub_id,
    qsub_argv,
)

SGE = DATA / "sge"
SPEC = JobSpec(
    "fs6", "/w/a b/job.sh", "/w/a b", "/w/a b/log", "/w/a b/exit", "fs6/E1/run-1", 4, 8000, 7200
)
CFG = SchedulerConfig(kind="sge", partition="all.q", account="lab", extra_args=("-l", "gpu=0"))


@pytest.mark.parametrize(
    ("code", "state"),
    [
        ("qw", JobState.PENDING),
        ("hqw", JobState.PENDING),
        ("hRwq", JobState.PENDING),
        ("r", JobState.RUNNING),
        ("t", JobState.RUNNING),
        ("Rr", JobState.RUNNING),
        ("s", JobState.SUSPENDED),
        ("S", JobState.SUSPENDED),
        ("T", JobState.SUSPENDED),
        ("dr", JobState.CANCELLED),
        ("dt", JobState.CANCELLED),
        ("Eqw", JobState.FAILED),
        ("z", JobState.LEFT_QUEUE),
        ("", JobState.UNKNOWN),
        ("X", JobState.UNKNOWN),
    ],
)
def test_every_sge_state_code(code: str, state: JobState) -> None:
    assert map_sge_state(code) is state


def test_parse_qstat_xml() -> None:
    parsed = parse_qstat_xml((SGE / "qstat.xml").read_text())
    assert {k: v[1].state for k, v in parsed.items()} == {
        "4701": JobState.RUNNING,
        "4702": JobState.CANCELLED,
        "4703": JobState.SUSPENDED,
        "4704": JobState.RUNNING,
        "4705": JobState.PENDING,
        "4706": JobState.PENDING,
        "4707": JobState.FAILED,
    }
    assert parsed[JobId("4707")][1].native == "Eqw"
    assert parsed[JobId("4701")][0] == "fs6-hippo_XNAT_E00001_run-7"
    assert parse_qstat_xml((SGE / "qstat_empty.xml").read_text()) == {}


@pytest.mark.parametrize(
    "text", ["<job_info>", "<!DOCTYPE x [<!ENTITY a 'b'>]><job_info>&a;</job_info>"]
)
def test_bad_or_dangerous_xml_is_refused(text: str) -> None:
    with pytest.raises(SchedulerOutputError):
        parse_qstat_xml(text)


@pytest.mark.parametrize(
    ("name", "job_id"), [("qsub_terse.txt", "4711"), ("qsub_array_terse.txt", "4712")]
)
def test_parse_qsub_id(name: str, job_id: str) -> None:
    assert parse_qsub_id((SGE / name).read_text()) == job_id


def test_qsub_argv() -> None:
    assert qsub_argv(SPEC, CFG) == [
        "qsub", "-terse", "-N", "fs6_E1_run-1", "-o", "/w/a b/log", "-j", "y", "-wd", "/w/a b",
        "-S", "/bin/bash", "-v", "PATH,HOME,LANG,TMPDIR,USER,LOGNAME",
        "-pe", "smp", "4", "-l", "h_vmem=2000M", "-l", "h_rt=7200",
        "-q", "all.q", "-A", "lab", "-l", "gpu=0", "/w/a b/job.sh",
    ]  # fmt: skip


def test_scheduler_through_a_scripted_runner() -> None:
    runner = ScriptedRunner(
        {
            "qsub": (0, (SGE / "qsub_terse.txt").read_text(), ""),
            "qstat": (0, (SGE / "qstat.xml").read_text(), ""),
            "qdel": (1, "", (SGE / "qdel_unknown.stderr").read_text()),
        }
    )
    sched = SgeScheduler(runner, CFG)
    assert sched.submit(SPEC) == "4711"
    polled = sched.poll([JobId("4701"), JobId("4707"), JobId("4711")])
    assert [s.state for s in polled.values()] == [
        JobState.RUNNING,
        JobState.FAILED,
        JobState.LEFT_QUEUE,
    ]
    assert [c[0] for c in runner.calls].count("qstat") == 1
    sched.cancel([JobId("99999")])  # gone already: not an error
    assert [f.job_id for f in sched.find("fs6-hippo/XNAT_E00005/run-7")] == ["4705"]


def test_refusal_and_poll_failure() -> None:
    err = (SGE / "qsub_bad_queue.stderr").read_text()
    sched = SgeScheduler(ScriptedRunner({"qsub": (1, "", err), "qstat": (1, "", "no qmaster")}))
    with pytest.raises(SubmissionError, match="unknown queue") as exc:
        sched.submit(SPEC)
    assert exc.value.stderr == err
    with pytest.raises(RemoteCommandError, match="no qmaster"):
        sched.poll([JobId("1")])


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("slurm", "SlurmScheduler"), ("sge", "SgeScheduler"), ("pbs", "PbsScheduler"),
     ("lsf", "LsfScheduler"), ("local", "LocalScheduler")],
)  # fmt: skip
def test_make_scheduler_picks_by_kind(kind: str, cls: str) -> None:
    from x2c.schedulers import make_scheduler

    sched = make_scheduler(ScriptedRunner({}), SchedulerConfig(kind=kind), workdir="/w/")  # type: ignore[arg-type]
    assert type(sched).__name__ == cls
    if kind == "local":
        assert sched.state_dir == "/w/.x2c-local"  # type: ignore[attr-defined]


REC = SGE / "recorded"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("qstat_running_held.xml",
         {"3": ("timeout", "r"), "6": ("del", "r"), "5": ("hold", "hqw")}),
        ("qstat_deleting.xml", {"6": ("del", "dr"), "5": ("hold", "hqw")}),
        ("qstat_error_array.xml",
         {"9": ("badwd", "Eqw"), "5": ("hold", "hqw"), "10": ("arr", "hqw")}),
        ("qstat_empty.xml", {}),
    ],
)  # fmt: skip
def test_recorded_sge_qstat(name: str, expected: dict[str, tuple[str, str]]) -> None:
    parsed = parse_qstat_xml((REC / name).read_text())
    assert {k: (n, s.native) for k, (n, s) in parsed.items()} == expected
    states = {s.native: s.state for _, s in parsed.values()}
    assert states.get("Eqw", JobState.FAILED) is JobState.FAILED
    assert states.get("dr", JobState.CANCELLED) is JobState.CANCELLED


def test_recorded_sge_qsub_and_qdel() -> None:
    assert parse_qsub_id((REC / "qsub_terse.txt").read_text()) == "9"
    assert parse_qsub_id((REC / "qsub_array_terse.txt").read_text()) == "10"
    assert is_unknown_job((REC / "qdel_unknown.stdout").read_text())
    err = (REC / "qsub_bad_queue.stderr").read_text()
    sched = SgeScheduler(ScriptedRunner({"qsub": (1, "", err)}), CFG)
    with pytest.raises(SubmissionError, match=r'unknown queue "nosuch\.q"'):
        sched.submit(SPEC)


def test_sge_qdel_of_gone_jobs_answers_on_stdout_and_is_not_an_error() -> None:
    out = (REC / "qdel_unknown.stdout").read_text()
    runner = ScriptedRunner({"qdel": (1, out, "")})
    SgeScheduler(runner, CFG).cancel([JobId("99999")])
    assert runner.calls == [["qdel", "99999"]]  # asked once, not again to raise
    failing = SgeScheduler(ScriptedRunner({"qdel": (1, "", "error: commlib error")}), CFG)
    with pytest.raises(RemoteCommandError, match="commlib error"):
        failing.cancel([JobId("1")])
