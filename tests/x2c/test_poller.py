"""How a job ended: :func:`x2c.poller.judge` (pure, every branch, time given explicitly) and
:func:`x2c.poller.poll_jobs` against the real local scheduler and the real SLURM of the test
cluster, counting the commands each poll runs: ONE status call for all jobs, at most one probe
of the exit markers."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.cluster import Cluster
from tests.x2c.helpers import until
from tests.x2c.schedulers.conftest import CountingRunner, job_script, watched
from x2c import jobdir as jd
from x2c.config import SchedulerConfig
from x2c.hosts.local import LocalRunner
from x2c.poller import (
    LOG_TAIL_CHARS,
    SUBMITTING,
    UPLOADED,
    Watched,
    is_live,
    is_success,
    judge,
    poll_jobs,
)
from x2c.schedulers.base import JobId, JobSpec, JobState, JobStatus, Scheduler
from x2c.schedulers.local import LocalScheduler
from x2c.schedulers.markers import Probe
from x2c.schedulers.slurm import SlurmScheduler

CFG = SchedulerConfig(exit_marker_grace_s=30, unknown_state_limit_s=120, log_tail_lines=2)
T0 = 1_000_000.0


def running(**fields: object) -> jd.JobRecord:
    """A registry entry of a job last seen running."""
    base: dict[str, object] = {
        "job_id": "42",
        "scheduler": "slurm",
        "host": "y",
        "pipeline": "demo",
        "version": "1",
        "experiment": "E1",
        "submitted_at": datetime(2026, 1, 1, tzinfo=UTC),
        "state": "RUNNING",
    }
    return jd.JobRecord.model_validate(base | fields)


def marker(code: int | None, tail: str = "line1\nline2") -> Probe:
    """What the probe read: the exit marker (None: not written) and the log tail."""
    return Probe(code is not None, code, tail)


# --- judge: the one rule ------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.OUT_OF_MEMORY,
        JobState.NODE_FAIL,
        JobState.PREEMPTED,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
        JobState.LOST,
    ],
)
def test_a_final_failing_state_is_the_end_with_code_reason_and_tail(state: JobState) -> None:
    before = running(left_queue_at=T0 - 5, unknown_since=T0 - 9)
    out = judge(before, JobStatus(state, state.value.lower()), marker(3), T0, CFG)
    assert (out.state, out.exit_code) == (state.value, 3)  # the marker's code when no other
    assert out.reason == f"the scheduler reports {state.value.lower()}"
    assert out.log_tail == "line1\nline2"
    assert (out.left_queue_at, out.unknown_since) == (None, None)
    assert not is_live(out.state) and not is_success(out.state)
    assert before.state == "RUNNING", "the entry given is never changed"


def test_the_schedulers_reason_and_exit_code_are_kept() -> None:
    status = JobStatus(JobState.FAILED, "FAILED", "NonZeroExitCode", 2)
    out = judge(running(), status, marker(None), T0, CFG)
    assert (out.state, out.exit_code, out.reason) == ("FAILED", 2, "NonZeroExitCode")


def test_completed_is_success_without_a_log_tail() -> None:
    out = judge(running(), JobStatus(JobState.COMPLETED, "COMPLETED"), marker(0), T0, CFG)
    assert (out.state, out.exit_code, out.log_tail) == ("COMPLETED", 0, "")
    assert is_success(out.state) and not is_live(out.state)


@pytest.mark.parametrize("scheduler_code", [None, 0])
def test_completed_with_a_failing_marker_is_failed(scheduler_code: int | None) -> None:
    """The script's own word (its exit marker) wins over the scheduler's."""
    status = JobStatus(JobState.COMPLETED, "COMPLETED", exit_code=scheduler_code)
    out = judge(running(), status, marker(2), T0, CFG)
    assert (out.state, out.exit_code) == ("FAILED", 2)
    assert "exit marker says 2" in out.reason
    assert out.log_tail == "line1\nline2"


def test_the_log_tail_is_bounded() -> None:
    tail = "x" * (LOG_TAIL_CHARS + 500)
    out = judge(running(), JobStatus(JobState.FAILED), marker(1, tail), T0, CFG)
    assert len(out.log_tail) == LOG_TAIL_CHARS


@pytest.mark.parametrize(("code", "state"), [(0, "COMPLETED"), (4, "FAILED")])
def test_left_the_queue_is_decided_by_the_marker(code: int, state: str) -> None:
    before = running(left_queue_at=T0 - 10)
    out = judge(before, JobStatus(JobState.LEFT_QUEUE), marker(code), T0, CFG)
    assert (out.state, out.exit_code, out.left_queue_at) == (state, code, None)
    assert out.reason == f"left the queue; exit marker says {code}"
    assert out.log_tail == ("" if code == 0 else "line1\nline2")


def test_left_the_queue_without_a_marker_is_lost_after_the_grace_across_calls() -> None:
    gone = JobStatus(JobState.LEFT_QUEUE)
    first = judge(running(), gone, marker(None), T0, CFG)
    assert (first.state, first.left_queue_at) == ("RUNNING", T0)  # recorded, still live
    later = judge(first, gone, marker(None), T0 + 29.9, CFG)
    assert later == first, "inside the grace: nothing changes, the first sighting is kept"
    lost = judge(later, gone, marker(None), T0 + 30, CFG)
    assert (lost.state, lost.exit_code, lost.left_queue_at) == ("LOST", None, None)
    assert "not written within 30 s" in lost.reason
    assert lost.log_tail == "line1\nline2"


def test_a_marker_written_but_not_yet_holding_a_number_is_no_marker() -> None:
    out = judge(running(), JobStatus(JobState.LEFT_QUEUE), Probe(True, None, ""), T0, CFG)
    assert (out.state, out.left_queue_at) == ("RUNNING", T0)


def test_a_marker_arriving_within_the_grace_wins() -> None:
    first = judge(running(), JobStatus(JobState.LEFT_QUEUE), marker(None), T0, CFG)
    out = judge(first, JobStatus(JobState.LEFT_QUEUE), marker(0), T0 + 10, CFG)
    assert (out.state, out.exit_code, out.left_queue_at) == ("COMPLETED", 0, None)


def test_an_unknown_state_is_never_success_and_fails_after_the_bound() -> None:
    odd = JobStatus(JobState.UNKNOWN, "WEIRD_NEW")
    first = judge(running(), odd, None, T0, CFG)
    assert (first.state, first.unknown_since) == ("RUNNING", T0)
    assert judge(first, odd, None, T0 + 119, CFG) == first
    out = judge(first, odd, None, T0 + 120, CFG)
    assert (out.state, out.unknown_since) == ("FAILED", None)
    assert "'WEIRD_NEW'" in out.reason and "120 s" in out.reason


@pytest.mark.parametrize(
    "state", [JobState.PENDING, JobState.RUNNING, JobState.COMPLETING, JobState.SUSPENDED]
)
def test_a_live_state_is_recorded_and_clears_earlier_sightings(state: JobState) -> None:
    before = running(left_queue_at=T0 - 20, unknown_since=T0 - 50)
    out = judge(before, JobStatus(state, state.value), None, T0, CFG)
    assert (out.state, out.left_queue_at, out.unknown_since) == (state.value, None, None)
    assert is_live(out.state)


@pytest.mark.parametrize(
    ("state", "live", "success"),
    [
        ("PENDING", True, False),
        ("REQUEUED", True, False),
        ("COMPLETED", False, True),
        (UPLOADED, False, True),
        (SUBMITTING, False, False),
        ("FAILED", False, False),
        ("LEFT_QUEUE", True, False),
        ("no such state", False, False),
    ],
)
def test_registry_states(state: str, live: bool, success: bool) -> None:
    assert (is_live(state), is_success(state)) == (live, success)


# --- poll_jobs: one poll per host ----------------------------------------------------------


def poll_once(
    sched: Scheduler, runner: CountingRunner, jobs: dict[str, Watched], now: float
) -> tuple[dict[str, jd.JobRecord], list[list[str]]]:
    """One :func:`poll_jobs` call: the entries that changed (also applied to ``jobs``) and the
    commands it ran."""
    before = len(runner.calls)
    changed = poll_jobs(sched, jobs, now)
    for key, record in changed.items():
        jobs[key] = Watched(record, jobs[key].jobdir)
    return changed, runner.calls[before:]


def programs(calls: list[list[str]]) -> list[str]:
    """What each command was: its program, or for ``sh -c`` programs their ``$0`` name."""
    return [c[3] if c[0] == "sh" else c[0] for c in calls]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[LocalScheduler, CountingRunner, Path]]:
    base = tmp_path / "it's a job dir"
    runner = CountingRunner(LocalRunner())
    cfg = SchedulerConfig(max_local_jobs=12, exit_marker_grace_s=5, log_tail_lines=2)
    sched = LocalScheduler(runner, cfg, str(tmp_path / "state"))
    yield sched, runner, base
    sched.cancel([JobId(p.name) for p in (tmp_path / "state").glob("*")])


def test_nothing_to_ask_runs_nothing(local: tuple[LocalScheduler, CountingRunner, Path]) -> None:
    sched, runner, _ = local
    assert poll_jobs(sched, {}, T0) == {}
    done = running(state="COMPLETED")
    assert poll_jobs(sched, {"a": Watched(done, jd.JobDir("/nowhere"))}, T0) == {}
    assert runner.calls == []


def test_local_jobs_one_status_call_and_one_probe_per_poll(
    local: tuple[LocalScheduler, CountingRunner, Path],
) -> None:
    sched, runner, base = local
    go = base / "go"
    bodies = {
        "ok": "exit 0",
        "bad": "echo broken >&2; exit 3",
        "hold": f"until [ -e {shlex.quote(str(go))} ]; do sleep 0.05; done",
    }
    specs: dict[str, JobSpec] = {}
    for i in range(12):
        kind = list(bodies)[i % 3]
        specs[f"{kind}-{i}"] = job_script(base, f"{kind}-{i}", bodies[kind])
    jobs = {k: watched(sched, sched.submit(s), s) for k, s in specs.items()}
    runner.calls.clear()

    def settled() -> bool:
        _, calls = poll_once(sched, runner, jobs, time.time())
        assert programs(calls).count("x2c-scan") == 1, calls  # one status call for 12 jobs
        assert programs(calls).count("x2c-probe") <= 1, calls
        assert set(programs(calls)) <= {"x2c-scan", "x2c-probe", "x2c-launch"}, calls
        return all(not is_live(w.record.state) for k, w in jobs.items() if not k.startswith("hold"))

    until(settled, "the ok and bad jobs to end")
    by_kind = {k: w.record for k, w in jobs.items()}
    for key, record in by_kind.items():
        if key.startswith("ok"):
            assert (record.state, record.exit_code, record.log_tail) == ("COMPLETED", 0, "")
        elif key.startswith("bad"):
            assert (record.state, record.exit_code) == ("FAILED", 3)
            assert record.log_tail == f"start {key}\nbroken"  # the last 2 lines
        else:
            assert record.state == "RUNNING" and record.exit_code is None
    go.touch()
    until(lambda: settled() and all(not is_live(w.record.state) for w in jobs.values()), "holds")
    assert all(jobs[k].record.state == "COMPLETED" for k in jobs if k.startswith("hold"))


def test_observing_starts_nothing(local: tuple[LocalScheduler, CountingRunner, Path]) -> None:
    """``x2c status`` asks with observe=True: the local pool must not launch queued jobs."""
    sched, runner, base = local
    one = LocalScheduler(
        runner, sched.config.model_copy(update={"max_local_jobs": 1}), sched.state_dir
    )
    go = base / "go"
    first, second = (
        job_script(base, name, f"until [ -e {shlex.quote(str(go))} ]; do sleep 0.05; done")
        for name in ("a", "b")
    )
    jobs = {"a": watched(one, one.submit(first), first)}
    jobs["b"] = watched(one, one.submit(second), second)
    runner.calls.clear()
    seen = poll_jobs(one, jobs, time.time(), observe=True)
    assert programs(runner.calls) == ["x2c-scan"]
    assert {k: r.state for k, r in seen.items()} == {"a": "RUNNING"}  # b stays PENDING
    go.touch()


def test_a_vanished_local_job_is_lost_after_the_grace_measured_across_polls(
    local: tuple[LocalScheduler, CountingRunner, Path],
) -> None:
    import os

    sched, runner, base = local
    spec = job_script(base, "orphan", "sleep 300")
    job = sched.submit(spec)
    state = Path(sched.state_dir) / job
    until(lambda: (state / "jobpid").exists(), "the job to start")
    os.kill(int((state / "pid").read_text()), 9)  # the launcher dies as in a host reboot
    os.killpg(int((state / "jobpid").read_text()), 9)  # SIGKILL: the EXIT trap cannot run
    until(lambda: sched.poll([job])[job].state is JobState.LEFT_QUEUE, "LEFT_QUEUE")
    jobs = {"o": watched(sched, job, spec)}
    changed, calls = poll_once(sched, runner, jobs, T0)
    assert changed["o"].left_queue_at == T0 and is_live(changed["o"].state)
    assert programs(calls).count("x2c-probe") == 1  # the marker was looked for
    assert poll_once(sched, runner, jobs, T0 + 4.9)[0] == {}
    lost, _ = poll_once(sched, runner, jobs, T0 + 5)
    assert lost["o"].state == "LOST" and "within 5 s" in lost["o"].reason


# --- poll_jobs against the real SLURM ------------------------------------------------------

SLURM = SchedulerConfig(
    kind="slurm", partition="debug", extra_args=("--oversubscribe",), exit_marker_grace_s=10
)


@pytest.fixture
def slurm(cluster: Cluster) -> tuple[SlurmScheduler, CountingRunner]:
    runner = CountingRunner(LocalRunner())
    sched = SlurmScheduler(runner, SLURM)
    return sched, runner


@pytest.mark.cluster
def test_slurm_jobs_one_squeue_and_one_probe_per_poll(
    slurm: tuple[SlurmScheduler, CountingRunner], tmp_path: Path
) -> None:
    sched, runner = slurm
    specs = [
        job_script(tmp_path, f"s{i}", f"echo job {i}; exit {3 * (i % 2)}", mem_mb=20)
        for i in range(8)
    ]
    jobs = {s.name: watched(sched, sched.submit(s), s) for s in specs}
    runner.calls.clear()
    polls = 0

    def ended() -> bool:
        nonlocal polls
        polls += 1
        _, calls = poll_once(sched, runner, jobs, time.time())
        assert [c[0] for c in calls].count("squeue") == 1, calls  # one status call for all
        assert programs(calls).count("x2c-probe") <= 1, calls
        assert set(programs(calls)) <= {"squeue", "x2c-probe"}, calls
        return not any(is_live(w.record.state) for w in jobs.values())

    until(ended, "eight SLURM jobs to end", timeout=150)
    for i, spec in enumerate(specs):
        record = jobs[spec.name].record
        assert (record.state, record.exit_code) == (("COMPLETED", 0), ("FAILED", 3))[i % 2]
        if i % 2:
            assert f"job {i}" in record.log_tail
    assert polls >= 1


@pytest.mark.cluster
def test_slurm_purged_jobs_are_decided_by_the_exit_marker(
    slurm: tuple[SlurmScheduler, CountingRunner], tmp_path: Path
) -> None:
    """SLURM forgets a job MinJobAge (5 s here) after it ends; without accounting the poll
    then only has the exit marker: 0 is success, non-zero failure, none at all is LOST once
    the grace has passed since a poll first saw the job gone."""
    sched, runner = slurm
    bodies = {"ok": "exit 0", "bad": "echo failing >&2; exit 4", "none": "trap - EXIT; exit 0"}
    specs = {k: job_script(tmp_path, k, body, mem_mb=20) for k, body in bodies.items()}
    jobs = {k: watched(sched, sched.submit(s), s) for k, s in specs.items()}
    ids = [JobId(w.record.job_id) for w in jobs.values()]
    until(
        lambda: all(s.state is JobState.LEFT_QUEUE for s in sched.poll(ids).values()),
        "SLURM to purge the jobs",
        timeout=150,
    )
    runner.calls.clear()
    changed, calls = poll_once(sched, runner, jobs, T0)
    assert [c[0] for c in calls] == ["squeue", "sh"] and programs(calls)[1] == "x2c-probe"
    ok, bad, none = changed["ok"], changed["bad"], changed["none"]
    assert (ok.state, ok.exit_code, ok.reason) == (
        "COMPLETED",
        0,
        "left the queue; exit marker says 0",
    )
    assert (bad.state, bad.exit_code) == ("FAILED", 4) and "failing" in bad.log_tail
    assert (none.state, none.left_queue_at) == ("PENDING", T0)
    assert poll_once(sched, runner, jobs, T0 + 9)[0] == {}
    lost, _ = poll_once(sched, runner, jobs, T0 + 10)
    assert lost["none"].state == "LOST" and "within 10 s" in lost["none"].reason
