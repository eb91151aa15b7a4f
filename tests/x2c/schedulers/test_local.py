"""LocalScheduler: a bounded pool of detached processes, through the real LocalRunner; jobs are
followed to their end as passes do (x2c.poller.poll_jobs)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.x2c.helpers import until
from tests.x2c.schedulers.conftest import CountingRunner, follow, job_script
from x2c.config import SchedulerConfig
from x2c.errors import ConfigError, SubmissionError
from x2c.hosts.local import LocalRunner
from x2c.schedulers.base import JobId, JobState
from x2c.schedulers.local import LocalScheduler, parse_scan


def q(path: Path) -> str:
    return shlex.quote(str(path))


CFG = SchedulerConfig(max_local_jobs=2, exit_marker_grace_s=2)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    d = tmp_path / 'it\'s a "local" host'  # hostile: quotes and spaces
    d.mkdir()
    return d


@pytest.fixture
def local(base: Path) -> Iterator[LocalScheduler]:
    sched = LocalScheduler(CountingRunner(LocalRunner()), CFG, str(base / "state dir"))
    yield sched
    everything = [JobId(p.name) for p in (base / "state dir").glob("*")]
    sched.cancel(everything)


def test_pool_is_bounded_and_queued_jobs_are_pending(local: LocalScheduler, base: Path) -> None:
    go = base / "go"
    body = f"while [ ! -e {q(go)} ]; do sleep 0.05; done"
    specs = [job_script(base, f"j{i}", body) for i in range(5)]
    ids = [local.submit(s) for s in specs]
    states = [s.state for s in local.poll(ids).values()]
    assert states.count(JobState.RUNNING) == 2 and states.count(JobState.PENDING) == 3
    assert [local.poll(ids)[i].state for i in ids[:2]] == [JobState.RUNNING] * 2  # FIFO
    go.touch()
    records, _ = follow(local, list(zip(ids, specs, strict=True)), timeout=60)
    assert [(r.state, r.exit_code) for r in records] == [("COMPLETED", 0)] * 5


def test_failing_job_has_exit_code_and_log_tail(local: LocalScheduler, base: Path) -> None:
    spec = job_script(base, "fails", "echo broken >&2; exit 3")
    [out], _ = follow(local, [(local.submit(spec), spec)], timeout=30)
    assert (out.state, out.exit_code) == ("FAILED", 3)
    assert "broken" in out.log_tail


def test_cancel_kills_the_whole_process_group(local: LocalScheduler, base: Path) -> None:
    child = base / "child.pid"
    job = local.submit(job_script(base, "cancel", f"sleep 300 & echo $! > {q(child)}; wait"))
    until(child.exists, "the job's child process")
    pid = int(child.read_text())
    local.cancel([job])
    until(lambda: local.poll([job])[job].state is JobState.CANCELLED, "the cancel")
    until(lambda: not Path(f"/proc/{pid}").exists(), f"the job's child {pid} to die")


def test_cancel_of_a_queued_job_means_it_never_runs(base: Path) -> None:
    sched = LocalScheduler(LocalRunner(), CFG.model_copy(update={"max_local_jobs": 1}), str(base))
    go = base / "go"
    first = sched.submit(job_script(base, "first", f"while [ ! -e {q(go)} ]; do sleep 0.05; done"))
    second_spec = job_script(base, "second", "echo ran")
    second = sched.submit(second_spec)
    sched.cancel([second])
    go.touch()
    until(lambda: sched.poll([first])[first].state is JobState.COMPLETED, "the first job")
    assert sched.poll([second])[second].state is JobState.CANCELLED
    assert not Path(second_spec.stdout_path).exists()


def test_walltime_is_enforced_as_timeout(local: LocalScheduler, base: Path) -> None:
    spec = job_script(base, "slow", "sleep 60", walltime_s=1)
    [out], _ = follow(local, [(local.submit(spec), spec)], timeout=30)
    assert out.state == "TIMEOUT"


def test_a_restarted_orchestrator_finds_and_follows_the_job(
    local: LocalScheduler, base: Path
) -> None:
    go = base / "go"
    spec = job_script(base, "survivor", f"while [ ! -e {q(go)} ]; do sleep 0.05; done")
    job = local.submit(spec)
    del local  # the orchestrator "restarts": only the host's files remain
    fresh = LocalScheduler(LocalRunner(), CFG, str(base / "state dir"))
    found = fresh.find(spec.tag)
    assert [(f.job_id, f.name, f.status.state) for f in found] == [
        (job, spec.name, JobState.RUNNING)
    ]
    go.touch()
    [out], _ = follow(fresh, [(job, spec)], timeout=30)
    assert (out.state, out.exit_code) == ("COMPLETED", 0)


def test_vanished_launcher_is_decided_by_the_marker(local: LocalScheduler, base: Path) -> None:
    spec = job_script(base, "orphan", "sleep 300")
    job = local.submit(spec)
    jobdir = base / "state dir" / job
    until(lambda: (jobdir / "jobpid").exists(), "the job to start")
    os.kill(int((jobdir / "pid").read_text()), 9)  # the launcher dies as in a host reboot
    os.killpg(int((jobdir / "jobpid").read_text()), 9)  # SIGKILL: the EXIT trap cannot run
    until(lambda: local.poll([job])[job].state is JobState.LEFT_QUEUE, "LEFT_QUEUE")
    [out], polls = follow(local, [(job, spec)], timeout=30)
    assert out.state == "LOST" and "not written within 2 s" in out.reason
    assert polls > 1, "the grace spans polls"


def test_one_scan_per_poll_whatever_the_number_of_jobs(local: LocalScheduler, base: Path) -> None:
    runner = local.runner
    assert isinstance(runner, CountingRunner)
    ids = [local.submit(job_script(base, f"n{i}", "true")) for i in range(6)]
    before = runner.counts["sh"]
    local.poll(ids)
    assert runner.counts["sh"] - before <= 2  # one scan, at most one launch


def test_a_scan_reads_the_jobs_not_ended_and_those_asked_about(base: Path) -> None:
    """Ended jobs cost a submit nothing (the scan of every submit once read them all: O(N^2)
    over N submissions); a poll still answers for an ended job it asks about, a cancel before
    the launch takes the job out of the pool, and a state directory from before ``.live``
    existed is indexed once, its queued job launched."""
    state = base / "state"
    go = base / "go"
    try:
        _scan_reads_the_jobs_not_ended(base, state, go)
    finally:
        go.touch()  # a failed assertion must not leave the held job running


def _scan_reads_the_jobs_not_ended(base: Path, state: Path, go: Path) -> None:
    sched = LocalScheduler(LocalRunner(), CFG.model_copy(update={"max_local_jobs": 1}), str(state))
    ended = [sched.submit(job_script(base, f"e{i}", "true")) for i in range(4)]
    until(lambda: all(s.state is JobState.COMPLETED for s in sched.poll(ended).values()), "ends")
    assert sched._scan() == {}  # nothing live: the ended jobs are not read
    assert set(sched._scan(ended[:2])) == set(ended[:2])
    held = sched.submit(job_script(base, "held", f"while [ ! -e {q(go)} ]; do sleep 0.05; done"))
    cancelled = sched.submit(job_script(base, "cancelled", "true"))
    waiting = sched.submit(job_script(base, "waiting", "true"))
    assert sched.poll([waiting])[waiting].state is JobState.PENDING
    sched.cancel([cancelled])
    assert set(sched._scan()) == {held, waiting}
    assert sched.poll([cancelled])[cancelled].state is JobState.CANCELLED
    # an older state directory: no .live (the running and the queued job are indexed again)
    for marker in (state / ".live").iterdir():
        marker.unlink()
    (state / ".live").rmdir()
    fresh = LocalScheduler(LocalRunner(), CFG.model_copy(update={"max_local_jobs": 1}), str(state))
    assert set(fresh._scan()) == {held, waiting}
    go.touch()
    until(lambda: fresh.poll([waiting])[waiting].state is JobState.COMPLETED, "the queued job")
    assert fresh._scan() == {}


def test_unwritable_state_dir_is_a_submission_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    sched = LocalScheduler(LocalRunner(), CFG, str(tmp_path / "file" / "state"))
    with pytest.raises(SubmissionError, match="could not queue"):
        sched.submit(job_script(tmp_path, "x", "true"))


def test_a_relative_state_dir_is_refused() -> None:
    with pytest.raises(ConfigError, match="absolute state directory"):
        LocalScheduler(LocalRunner(), CFG)


@pytest.mark.parametrize(
    ("line", "state", "code"),
    [
        ("1 queued - -", JobState.PENDING, None),
        ("1 starting - -", JobState.RUNNING, None),
        ("1 running - -", JobState.RUNNING, None),
        ("1 done 0 -", JobState.COMPLETED, 0),
        ("1 done 3 -", JobState.FAILED, 3),
        ("1 done 143 c", JobState.CANCELLED, 143),
        ("1 cancelled - c", JobState.CANCELLED, None),
        ("1 done 143 t", JobState.TIMEOUT, 143),
        ("1 done 0 t", JobState.COMPLETED, 0),
        ("1 vanished - -", JobState.LEFT_QUEUE, None),
        ("1 zombie - -", JobState.UNKNOWN, None),
    ],
)
def test_parse_scan(line: str, state: JobState, code: int | None) -> None:
    status = parse_scan(line + "\n")[JobId("1")]
    assert (status.state, status.exit_code) == (state, code)
