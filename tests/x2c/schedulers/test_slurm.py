"""SlurmScheduler and the per-pass poll against the real one-node SLURM of the test cluster."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fixtures.cluster import Cluster
from tests.x2c.helpers import until
from tests.x2c.schedulers.conftest import CountingRunner, follow, job_script
from x2c.config import SchedulerConfig
from x2c.errors import SubmissionError
from x2c.hosts.base import Completed
from x2c.hosts.local import LocalRunner
from x2c.jobdir import JobRecord
from x2c.schedulers.base import JobId, JobSpec, JobState
from x2c.schedulers.slurm import SlurmScheduler, array_task

pytestmark = pytest.mark.cluster

# Small memory requests so jobs share the 2-CPU node (without --mem a job takes the whole node).
CFG = SchedulerConfig(
    kind="slurm",
    partition="debug",
    extra_args=("--oversubscribe",),
    exit_marker_grace_s=10,
)


class Slurm:
    def __init__(self, tmp: Path) -> None:
        self.runner = CountingRunner(LocalRunner())
        self.sched = SlurmScheduler(self.runner, CFG)
        self.tmp = tmp
        self.submitted: list[JobId] = []

    def submit(self, name: str, body: str, **kw: int) -> tuple[JobId, JobSpec]:
        spec = job_script(self.tmp, name, body, **{"mem_mb": 50, **kw})
        job = self.sched.submit(spec)
        self.submitted.append(job)
        return job, spec


@pytest.fixture(scope="module")
def slurm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    s = Slurm(tmp_path_factory.mktemp("slurm jobs"))
    yield s
    s.sched.cancel(s.submitted)


@pytest.fixture(scope="module")
def walltime_job(slurm: Slurm) -> Iterator[dict[str, JobRecord]]:
    """Started first because SLURM enforces limits in whole minutes (about 60-90 s here), and
    followed from the start (a thread polling as passes do) so a poll sees TIMEOUT before
    SLURM purges the job; the dict gets its final entry under "out"."""
    job, spec = slurm.submit("walltime", "sleep 300", walltime_s=1)
    result: dict[str, JobRecord] = {}

    def watch() -> None:
        [result["out"]], _ = follow(slurm.sched, [(job, spec)], timeout=240)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    yield result
    thread.join(timeout=240)


def test_twenty_jobs_one_squeue_per_poll(slurm: Slurm, walltime_job: object) -> None:
    runner = CountingRunner(LocalRunner())  # this test's own, so other pollers do not count
    sched = SlurmScheduler(runner, CFG)
    specs = [job_script(slurm.tmp, f"many-{i}", "sleep 1", mem_mb=20) for i in range(20)]
    ids = [sched.submit(s) for s in specs]
    slurm.submitted += ids
    outcomes, polls = follow(sched, list(zip(ids, specs, strict=True)), timeout=120)
    assert all(o.state == "COMPLETED" and o.exit_code == 0 for o in outcomes), outcomes
    squeues = [c for c in runner.calls if c[0] == "squeue"]
    assert len(squeues) == polls  # exactly one status call per poll ...
    assert squeues[0][-1].split(",") == ids  # ... covering every waiting job
    probes = [c for c in runner.calls if c[0] == "sh" and c[3] == "x2c-probe"]
    assert len(probes) <= polls  # and at most one probe of the markers that ended


def test_failing_job_is_failed_with_code_and_log_tail(slurm: Slurm) -> None:
    job, spec = slurm.submit("fails", "echo about to fail >&2\nexit 3")
    [out], _ = follow(slurm.sched, [(job, spec)], timeout=150)
    assert (out.state, out.exit_code) == ("FAILED", 3)
    assert "about to fail" in out.log_tail


def test_cancelled_job(slurm: Slurm) -> None:
    job, spec = slurm.submit("cancel me", "sleep 300")
    slurm.sched.cancel([job])
    [out], _ = follow(slurm.sched, [(job, spec)], timeout=150)
    assert out.state == "CANCELLED", out  # polled at once: SLURM lists it for MinJobAge


def test_purged_ids_are_left_queue_not_a_poll_failure(slurm: Slurm) -> None:
    # One purged id makes squeue exit 1 ("Invalid job id specified"); several make it exit 0.
    assert slurm.sched.poll([JobId("66000000")])[JobId("66000000")].state is JobState.LEFT_QUEUE
    both = slurm.sched.poll([JobId("66000000"), JobId("66000001")])
    assert {s.state for s in both.values()} == {JobState.LEFT_QUEUE}
    slurm.sched.cancel([JobId("66000000")])  # cancelling a gone job is not an error


def test_refused_submission_carries_slurms_words(slurm: Slurm, tmp_path: Path) -> None:
    sched = SlurmScheduler(LocalRunner(), CFG.model_copy(update={"partition": "no-such-queue"}))
    with pytest.raises(SubmissionError, match="Invalid partition name specified") as err:
        sched.submit(job_script(tmp_path, "refused", "true"))
    assert "--partition=no-such-queue" in err.value.argv
    assert "invalid partition" in err.value.stderr


def test_find_by_tag_after_a_restart(slurm: Slurm) -> None:
    job, spec = slurm.submit("findable", "sleep 300")
    fresh = SlurmScheduler(LocalRunner(), CFG)  # a restarted orchestrator knows only the tag
    found = fresh.find(spec.tag)
    slurm.sched.cancel([job])
    assert [(f.job_id, f.name) for f in found] == [(job, spec.name)]
    assert found[0].status.state in (JobState.PENDING, JobState.RUNNING)


def test_an_array_task_is_polled_found_and_cancelled_on_its_own(slurm: Slurm) -> None:
    """Three tasks of one ``sbatch --array``: one squeue covers them as ``<id>_<i>``, find()
    tells each by the array's tag and its index, and scancel of one task leaves the others."""
    spec = job_script(slurm.tmp, "array", "sleep 300", mem_mb=50)
    tag = f"x2c.array.{spec.tag}"
    array = SlurmScheduler(slurm.runner, CFG).submit(replace(spec, tag=tag, array=3))
    tasks = [JobId(f"{array}_{i}") for i in range(3)]
    slurm.submitted += tasks
    before = slurm.runner.counts["squeue"]
    polled = slurm.sched.poll(tasks)
    assert slurm.runner.counts["squeue"] == before + 1
    assert {s.state for s in polled.values()} <= {JobState.PENDING, JobState.RUNNING}, polled
    assert [f.job_id for f in slurm.sched.find(array_task(tag, 2))] == [tasks[2]]
    slurm.sched.cancel([tasks[1]])
    # a running task is listed CANCELLED for MinJobAge; a pending one SLURM drops at once
    # (recorded on 22.05): it left the queue, and with no exit marker the poller fails it LOST
    gone = (JobState.CANCELLED, JobState.LEFT_QUEUE)
    after = until(
        lambda: (p := slurm.sched.poll(tasks))[tasks[1]].state in gone and p,
        "task 1 to be cancelled",
    )
    assert after[tasks[0]].state in (JobState.PENDING, JobState.RUNNING)
    assert after[tasks[2]].state in (JobState.PENDING, JobState.RUNNING)
    slurm.sched.cancel(tasks)


def test_walltime_kill_is_timeout(walltime_job: dict[str, JobRecord]) -> None:
    until(lambda: "out" in walltime_job, "the walltime job to end", timeout=240)
    out = walltime_job["out"]
    assert out.state == "TIMEOUT", out
    assert "DUE TO TIME LIMIT" in out.log_tail


class _ScriptedRunner:
    """Answers squeue with one recorded-format line carrying a state SLURM may add one day."""

    name = "scripted"

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        out = "7|QUANTUM_LIMBO|j|t|None\n" if argv[0] == "squeue" else ""
        return Completed(tuple(argv), 0, out, "")


def test_unknown_slurm_state_is_not_success() -> None:
    sched = SlurmScheduler(_ScriptedRunner(), CFG, accounting=False)
    status = sched.poll([JobId("7")])[JobId("7")]
    assert status.state is JobState.UNKNOWN and status.native == "QUANTUM_LIMBO"
    assert not status.state.is_success and not status.state.is_final
