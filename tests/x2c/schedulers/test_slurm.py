"""SlurmScheduler and the poller against the real one-node SLURM of the test cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.fixtures.cluster import Cluster
from tests.x2c.schedulers.conftest import CountingRunner, job_script
from x2c.config import SchedulerConfig
from x2c.errors import SubmissionError
from x2c.hosts.base import Completed
from x2c.hosts.local import LocalRunner
from x2c.poller import HostPoller
from x2c.schedulers.base import JobId, JobSpec, JobState
from x2c.schedulers.slurm import SlurmScheduler

pytestmark = pytest.mark.cluster

# Small memory requests so jobs share the 2-CPU node (without --mem a job takes the whole node).
CFG = SchedulerConfig(
    kind="slurm",
    partition="debug",
    extra_args=("--oversubscribe",),
    poll_min_s=0.5,
    poll_max_s=2,
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

    def poller(self) -> HostPoller:
        return HostPoller(self.sched, CFG)


@pytest.fixture(scope="module")
def slurm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    s = Slurm(tmp_path_factory.mktemp("slurm jobs"))
    yield s
    s.sched.cancel(s.submitted)


@pytest.fixture(scope="module")
def walltime_job(slurm: Slurm) -> Iterator[tuple[JobId, HostPoller]]:
    """Started first because SLURM enforces limits in whole minutes (about 60-90 s here), and
    watched from the start so the poller sees TIMEOUT before SLURM purges the job."""
    job, spec = slurm.submit("walltime", "sleep 300", walltime_s=1)
    poller = slurm.poller()
    poller.register(job, exit_marker=spec.exit_marker, log=spec.stdout_path)
    yield job, poller
    poller.close()


def test_twenty_jobs_one_squeue_per_poll(slurm: Slurm, walltime_job: object) -> None:
    runner = CountingRunner(LocalRunner())  # this test's own, so other pollers do not count
    sched = SlurmScheduler(runner, CFG)
    specs = [job_script(slurm.tmp, f"many-{i}", "sleep 1", mem_mb=20) for i in range(20)]
    ids = [sched.submit(s) for s in specs]
    slurm.submitted += ids
    poller = HostPoller(sched, CFG)
    for job, spec in zip(ids, specs, strict=True):
        poller.register(job, exit_marker=spec.exit_marker, log=spec.stdout_path)
    outcomes = [poller.wait(i, timeout=120) for i in ids]
    poller.close()
    assert all(o.state is JobState.COMPLETED and o.exit_code == 0 for o in outcomes), outcomes
    assert all(o.log_tail.startswith("start many-") for o in outcomes)
    squeues = [c for c in runner.calls if c[0] == "squeue"]
    assert len(squeues) == poller.polls  # exactly one status call per poll interval
    assert squeues[0][-1].split(",") == ids  # ... covering every waiting job
    assert poller.polls < 20


def test_failing_job_is_failed_with_code_and_log_tail(slurm: Slurm) -> None:
    poller = slurm.poller()
    job, spec = slurm.submit("fails", "echo about to fail >&2\nexit 3")
    poller.register(job, exit_marker=spec.exit_marker, log=spec.stdout_path)
    out = poller.wait(job, timeout=150)
    poller.close()
    assert (out.state, out.exit_code, out.ok) == (JobState.FAILED, 3, False)
    assert "about to fail" in out.log_tail


def test_cancelled_job(slurm: Slurm) -> None:
    poller = slurm.poller()
    job, spec = slurm.submit("cancel me", "sleep 300")
    poller.register(job, exit_marker=spec.exit_marker, log=spec.stdout_path)
    slurm.sched.cancel([job])
    out = poller.wait(job, timeout=150)
    poller.close()
    assert out.state is JobState.CANCELLED and not out.ok


def _until_purged(sched: SlurmScheduler, ids: list[JobId], within: float = 150) -> None:
    """Poll squeue (a condition with a deadline) until SLURM forgets ``ids`` (MinJobAge=5)."""
    deadline = time.monotonic() + within
    pause = threading.Event()
    while any(s.state is not JobState.LEFT_QUEUE for s in sched.poll(ids).values()):
        assert time.monotonic() < deadline, f"SLURM still lists {ids} after {within} s"
        pause.wait(0.5)


def test_job_that_left_the_queue_is_decided_by_its_marker(slurm: Slurm) -> None:
    job, spec = slurm.submit("left", "exit 0")
    bad, bad_spec = slurm.submit("left-bad", "exit 4")
    _until_purged(slurm.sched, [job, bad])
    poller = slurm.poller()
    for j, s in ((job, spec), (bad, bad_spec)):
        poller.register(j, exit_marker=s.exit_marker, log=s.stdout_path)
    ok, failed = poller.wait(job, timeout=150), poller.wait(bad, timeout=150)
    poller.close()
    assert (ok.state, ok.exit_code, ok.native) == (JobState.COMPLETED, 0, "LEFT_QUEUE")
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 4)
    assert "left the queue" in failed.reason and "start left-bad" in failed.log_tail


def test_job_gone_without_marker_is_lost_after_the_grace(slurm: Slurm) -> None:
    job, spec = slurm.submit("no-marker", "trap - EXIT\nexit 0")  # drops its EXIT trap
    _until_purged(slurm.sched, [job])
    poller = HostPoller(slurm.sched, CFG.model_copy(update={"exit_marker_grace_s": 1}))
    poller.register(job, exit_marker=spec.exit_marker, log=spec.stdout_path)
    out = poller.wait(job, timeout=150)
    poller.close()
    assert out.state is JobState.LOST and not out.ok


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


def test_walltime_kill_is_timeout(walltime_job: tuple[JobId, HostPoller]) -> None:
    job, poller = walltime_job
    out = poller.wait(job, timeout=180)
    assert out.state is JobState.TIMEOUT and not out.ok
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
