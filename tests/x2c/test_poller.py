"""The per-host poller, driven step by step with a fake clock and a small fake scheduler; exit
markers and logs are real files read through the real LocalRunner."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from x2c.config import SchedulerConfig
from x2c.errors import JobFailedError, RemoteCommandError, SchedulerError, SSHConnectError
from x2c.hosts.local import LocalRunner
from x2c.poller import Backoff, HostPoller, PollerRegistry
from x2c.schedulers.base import FoundJob, JobId, JobSpec, JobState, JobStatus, Scheduler


class FakeScheduler(Scheduler):
    """Answers polls from ``states``; ``failures`` makes the next polls raise."""

    kind = "fake"

    def __init__(self, config: SchedulerConfig) -> None:
        super().__init__(LocalRunner(), config)
        self.states: dict[JobId, JobStatus] = {}
        self.calls: list[list[JobId]] = []
        self.failures: list[Exception] = []
        self.lock = threading.Lock()

    def submit(self, spec: JobSpec) -> JobId:
        job_id = JobId(str(len(self.states) + 1))
        self.states[job_id] = JobStatus(JobState.PENDING, "PENDING")
        return job_id

    def poll(self, ids: Sequence[JobId]) -> dict[JobId, JobStatus]:
        with self.lock:
            self.calls.append(list(ids))
            if self.failures:
                raise self.failures.pop(0)
            return {i: self.states[i] for i in ids if i in self.states}

    def cancel(self, ids: Sequence[JobId]) -> None:
        for i in ids:
            self.states[i] = JobStatus(JobState.CANCELLED, "CANCELLED")

    def find(self, tag: str) -> list[FoundJob]:
        return []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CFG = SchedulerConfig(
    poll_min_s=2,
    poll_max_s=60,
    exit_marker_grace_s=30,
    poll_give_up_s=600,
    unknown_state_limit_s=120,
    log_tail_lines=2,
)


@pytest.fixture
def rig(tmp_path: Path) -> tuple[FakeScheduler, HostPoller, Clock, Path]:
    clock = Clock()
    sched = FakeScheduler(CFG)
    return sched, HostPoller(sched, CFG, clock=clock, start=False), clock, tmp_path


def _spec(tmp: Path, name: str) -> JobSpec:
    d = tmp / f"it's {name}"  # hostile path: quote, space
    d.mkdir()
    return JobSpec(name, str(d / "job.sh"), str(d), str(d / "job.log"), str(d / "exit"))


def _finish(spec: JobSpec, code: int, log: str = "line1\nline2\nline3\n") -> None:
    Path(spec.stdout_path).write_text(log)
    Path(spec.exit_marker).write_text(f"{code}\n")


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    b = Backoff(2, 60)
    assert [b.next() for _ in range(7)] == [2, 4, 8, 16, 32, 60, 60]
    b.reset()
    assert b.next() == 2


def test_one_poll_call_covers_every_waiting_job(rig: tuple) -> None:
    sched, poller, _, tmp = rig
    ids = [poller.submit(_spec(tmp, f"j{i}")) for i in range(20)]
    poller.poll_once()
    assert sched.calls == [ids]
    assert poller.polls == 1
    assert poller.status(ids[0]) == JobStatus(JobState.PENDING, "PENDING")


def test_interval_grows_while_nothing_changes_and_resets_on_news(rig: tuple) -> None:
    sched, poller, clock, tmp = rig
    a = poller.submit(_spec(tmp, "a"))
    delays = []
    for _ in range(7):
        before = clock.now
        poller.poll_once()
        delays.append(poller._next_poll - before)
        clock.now = poller._next_poll
    assert delays == [2, 4, 8, 16, 32, 60, 60]
    poller.poll_once()
    clock.now += 10  # 50 s before the next poll is due
    poller.register(JobId("99"), exit_marker=str(tmp / "none"))  # a new job: short again
    assert poller._next_poll == clock.now + 2
    sched.states[a] = JobStatus(JobState.FAILED, "FAILED")
    poller.poll_once()
    assert poller._next_poll == clock.now + 2  # something finished: short again


def test_failed_job_gets_exit_code_reason_and_log_tail(rig: tuple) -> None:
    sched, poller, _, tmp = rig
    spec = _spec(tmp, "fail")
    job = poller.submit(spec)
    _finish(spec, 3)
    sched.states[job] = JobStatus(JobState.FAILED, "FAILED", "NonZeroExitCode")
    poller.poll_once()
    out = poller.wait(job, timeout=0)
    assert (out.state, out.exit_code, out.reason, out.log_tail) == (
        JobState.FAILED,
        3,
        "NonZeroExitCode",
        "line2\nline3",
    )
    with pytest.raises(JobFailedError) as err:
        out.raise_for_state()
    assert err.value.exit_code == 3 and err.value.log_tail == "line2\nline3"


def test_left_queue_is_decided_by_the_marker(rig: tuple) -> None:
    sched, poller, _, tmp = rig
    ok, bad = _spec(tmp, "ok"), _spec(tmp, "bad")
    a, b = poller.submit(ok), poller.submit(bad)
    _finish(ok, 0)
    _finish(bad, 7)
    sched.states.clear()  # both purged from the queue
    poller.poll_once()
    assert poller.wait(a, timeout=0).ok
    assert poller.wait(a, timeout=0).state is JobState.COMPLETED
    out = poller.wait(b, timeout=0)
    assert (out.state, out.exit_code) == (JobState.FAILED, 7)
    assert str(bad.exit_marker) in out.reason


def test_left_queue_without_marker_waits_the_grace_then_is_lost(rig: tuple) -> None:
    sched, poller, clock, tmp = rig
    spec = _spec(tmp, "lag")
    job = poller.submit(spec)
    sched.states.clear()
    poller.poll_once()
    clock.now += 29
    poller.poll_once()
    with pytest.raises(TimeoutError):
        poller.wait(job, timeout=0)  # still inside the grace period
    assert poller._next_poll - clock.now <= CFG.exit_marker_grace_s / 4  # looks again soon
    clock.now += 2
    poller.poll_once()
    out = poller.wait(job, timeout=0)
    assert out.state is JobState.LOST and not out.ok
    assert "not written within 30 s" in out.reason


def test_marker_arriving_late_within_the_grace_wins(rig: tuple) -> None:
    sched, poller, clock, tmp = rig
    spec = _spec(tmp, "late")
    job = poller.submit(spec)
    sched.states.clear()
    poller.poll_once()
    clock.now += 10
    _finish(spec, 0)
    poller.poll_once()
    assert poller.wait(job, timeout=0).state is JobState.COMPLETED


def test_unknown_state_is_never_success_and_fails_after_the_bound(rig: tuple) -> None:
    sched, poller, clock, tmp = rig
    job = poller.submit(_spec(tmp, "odd"))
    sched.states[job] = JobStatus(JobState.UNKNOWN, "WEIRD_NEW")
    poller.poll_once()
    clock.now += 119
    poller.poll_once()
    with pytest.raises(TimeoutError):
        poller.wait(job, timeout=0)
    clock.now += 1
    poller.poll_once()
    out = poller.wait(job, timeout=0)
    assert out.state is JobState.UNKNOWN and not out.ok
    assert "WEIRD_NEW" in out.reason


def test_failed_polls_back_off_and_never_fail_the_job(rig: tuple) -> None:
    sched, poller, clock, tmp = rig
    spec = _spec(tmp, "flaky")
    job = poller.submit(spec)
    sched.failures = [
        SSHConnectError("connection lost", host="y"),
        RemoteCommandError("squeue: error: Unable to contact slurm controller", host="y"),
    ]
    delays = []
    for _ in range(2):
        before = clock.now
        poller.poll_once()
        delays.append(poller._next_poll - before)
        clock.now = poller._next_poll
    assert delays == [2, 4]
    assert poller.failed_polls == 2
    with pytest.raises(TimeoutError):
        poller.wait(job, timeout=0)
    _finish(spec, 0)
    sched.states[job] = JobStatus(JobState.COMPLETED, "COMPLETED")
    poller.poll_once()
    assert poller.wait(job, timeout=0).ok


def test_waiters_get_a_clear_error_after_the_give_up_bound(rig: tuple) -> None:
    sched, poller, clock, tmp = rig
    job = poller.submit(_spec(tmp, "gone"))
    sched.failures = [SSHConnectError("no route to host", host="y")] * 50
    while clock.now < 1000 + 590:
        poller.poll_once()
        clock.now = poller._next_poll
        with pytest.raises(TimeoutError):
            poller.wait(job, timeout=0)  # a failing poll is not a failing job
    clock.now = 1000 + 600
    poller.poll_once()
    with pytest.raises(SchedulerError, match="could not poll the scheduler on local") as err:
        poller.wait(job, timeout=0)
    assert "no route to host" in str(err.value)
    assert isinstance(err.value.__cause__, SSHConnectError)


def test_completed_with_a_failing_marker_is_a_failure(rig: tuple) -> None:
    sched, poller, _, tmp = rig
    spec = _spec(tmp, "liar")
    job = poller.submit(spec)
    _finish(spec, 2)
    sched.states[job] = JobStatus(JobState.COMPLETED, "COMPLETED")
    poller.poll_once()
    out = poller.wait(job, timeout=0)
    assert (out.state, out.exit_code) == (JobState.FAILED, 2)


def test_unregistered_job_is_a_clear_error(rig: tuple) -> None:
    _, poller, _, _ = rig
    with pytest.raises(SchedulerError, match="not registered"):
        poller.wait(JobId("404"))


def test_background_thread_serves_many_waiting_threads(tmp_path: Path) -> None:
    cfg = CFG.model_copy(update={"poll_min_s": 0.02, "poll_max_s": 0.1})
    sched = FakeScheduler(cfg)
    poller = HostPoller(sched, cfg)
    specs = [_spec(tmp_path, f"t{i}") for i in range(8)]
    ids = [poller.submit(s) for s in specs]
    results: dict[JobId, JobState] = {}
    lock = threading.Lock()

    def waiter(job: JobId) -> None:
        out = poller.wait(job, timeout=30)
        with lock:
            results[job] = out.state

    threads = [threading.Thread(target=waiter, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for i, s in enumerate(specs):
        _finish(s, i % 2)
    with sched.lock:
        sched.states.clear()
    for t in threads:
        t.join(timeout=30)
    poller.close()
    assert results == {
        j: JobState.COMPLETED if i % 2 == 0 else JobState.FAILED for i, j in enumerate(ids)
    }
    assert all(len(call) <= len(ids) for call in sched.calls)


def test_close_releases_waiters_and_registry_shares_one_poller_per_host(tmp_path: Path) -> None:
    sched = FakeScheduler(CFG)
    registry = PollerRegistry()
    poller = registry.get(sched)
    assert registry.get(FakeScheduler(CFG)) is poller  # same host name "local"
    job = poller.submit(_spec(tmp_path, "c"))
    registry.close()
    with pytest.raises(SchedulerError, match="closed"):
        poller.wait(job, timeout=5)
    assert registry.get(sched) is not poller
    registry.close()


def test_forget_drops_a_job_from_the_next_poll(rig: tuple) -> None:
    sched, poller, _, tmp = rig
    a, b = poller.submit(_spec(tmp, "a")), poller.submit(_spec(tmp, "b"))
    poller.forget(a)
    poller.poll_once()
    assert sched.calls == [[b]]
    with pytest.raises(SchedulerError, match="not registered"):
        poller.wait(a, timeout=0)
