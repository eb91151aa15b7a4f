"""One poller per host: every job waiting on a host is polled in ONE scheduler call per interval.

Many threads (Prefect task threads, say) call :meth:`HostPoller.wait`; one background thread asks
the scheduler about all of their jobs at once, backs off while nothing changes (``poll_min_s``
doubling toward ``poll_max_s``, as submitit's InfoWatcher does), and snaps back to short intervals
when a job finishes or a new one is registered. A failed poll (SSH down, squeue error, garbled
output) is retried with backoff and never counted as a job failure; only after ``poll_give_up_s``
without one good poll do the waiters get a :class:`~x2c.errors.SchedulerError`. A job that has left
the queue is decided by its exit marker, read for all such jobs in one call, after a grace period
for filesystem lag; the same call returns the tail of each finished job's log.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from x2c.config import SchedulerConfig
from x2c.errors import JobFailedError, RemoteError, SchedulerError, SchedulerOutputError
from x2c.schedulers.base import JobId, JobSpec, JobState, JobStatus, Scheduler
from x2c.schedulers.markers import Probe, new_boundary, parse_probe, probe_argv

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: the final state, the exit code when known, why, and its log's tail."""

    job_id: JobId
    state: JobState
    exit_code: int | None
    reason: str
    log_tail: str = ""
    native: str = ""

    @property
    def ok(self) -> bool:
        """True only when the job completed successfully."""
        return self.state.is_success

    def raise_for_state(self) -> JobOutcome:
        """Return self when the job succeeded, else raise :class:`JobFailedError` with it all."""
        if self.ok:
            return self
        raise JobFailedError(
            f"job {self.job_id} ended {self.state.value} (exit {self.exit_code}): {self.reason}; "
            "see the log tail on this error and the job's log on the host",
            job_id=self.job_id,
            state=self.state.value,
            exit_code=self.exit_code,
            reason=self.reason,
            log_tail=self.log_tail,
        )


class Backoff:
    """Delays that start at ``min_s`` and double up to ``max_s``; :meth:`reset` starts over."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self.min_s = min_s
        self.max_s = max(min_s, max_s)
        self._next = min_s

    def reset(self) -> None:
        """Go back to the shortest delay (something changed)."""
        self._next = self.min_s

    def next(self) -> float:
        """The next delay; each call doubles the one after, up to ``max_s``."""
        delay = self._next
        self._next = min(self.max_s, self._next * 2)
        return delay


@dataclass
class _Watch:
    job_id: JobId
    exit_marker: str
    log: str
    left_at: float | None = None
    unknown_since: float | None = None
    last: JobStatus | None = None
    outcome: JobOutcome | None = None
    error: SchedulerError | None = None


class HostPoller:
    """The one poller for one host's scheduler. Thread-safe; the background thread starts on the
    first registration unless ``start=False`` (tests then drive :meth:`poll_once` with a fake
    ``clock``)."""

    def __init__(
        self,
        scheduler: Scheduler,
        config: SchedulerConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        start: bool = True,
    ) -> None:
        self.scheduler = scheduler
        self.config = config or scheduler.config
        self._clock = clock
        self._autostart = start
        self._cond = threading.Condition()
        self._watches: dict[JobId, _Watch] = {}
        self._backoff = Backoff(self.config.poll_min_s, self.config.poll_max_s)
        self._next_poll = math.inf  # set by the first registration
        self._failing_since: float | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self.polls = 0
        """Scheduler status calls made (good or failed): the figure the benchmarks count."""
        self.failed_polls = 0

    @property
    def host(self) -> str:
        """The host this poller serves."""
        return self.scheduler.host

    def submit(self, spec: JobSpec) -> JobId:
        """Submit ``spec`` and register it in one step."""
        job_id = self.scheduler.submit(spec)
        self.register(job_id, exit_marker=spec.exit_marker, log=spec.stdout_path)
        return job_id

    def register(self, job_id: JobId, *, exit_marker: str, log: str = "") -> None:
        """Start watching ``job_id`` (again, after a restart: registering twice is harmless)."""
        with self._cond:
            if self._closed:
                raise SchedulerError(f"the poller for {self.host} is closed; make a new one")
            if job_id not in self._watches or self._watches[job_id].error is not None:
                self._watches[job_id] = _Watch(job_id, exit_marker, log)
            self._backoff.reset()
            self._next_poll = min(self._next_poll, self._clock() + self.config.poll_min_s)
            self._cond.notify_all()
            if self._autostart and self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"x2c-poller-{self.host}", daemon=True
                )
                self._thread.start()

    def status(self, job_id: JobId) -> JobStatus | None:
        """The last status the scheduler reported for ``job_id`` (None before the first poll)."""
        with self._cond:
            return self._watch(job_id).last

    def wait(self, job_id: JobId, timeout: float | None = None) -> JobOutcome:
        """Block until ``job_id`` ends and return how; TimeoutError after ``timeout`` seconds,
        SchedulerError if the host could not be polled for ``poll_give_up_s``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            watch = self._watch(job_id)
            while watch.outcome is None and watch.error is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"job {job_id} on {self.host} still running after {timeout} s"
                    )
                self._cond.wait(remaining)
            if watch.error is not None:
                raise watch.error
            assert watch.outcome is not None
            return watch.outcome

    def forget(self, job_id: JobId) -> None:
        """Drop ``job_id`` once its outcome has been handled, so a long-lived poller stays small;
        a job still waited on is no longer polled and its waiters get a SchedulerError."""
        with self._cond:
            watch = self._watches.pop(job_id, None)
            if watch is not None and watch.outcome is None and watch.error is None:
                watch.error = SchedulerError(f"job {job_id} was dropped from the poller")
            self._cond.notify_all()

    def close(self) -> None:
        """Stop the background thread; waiters still blocked get a SchedulerError."""
        with self._cond:
            self._closed = True
            for watch in self._watches.values():
                if watch.outcome is None and watch.error is None:
                    watch.error = SchedulerError(f"the poller for {self.host} was closed")
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _watch(self, job_id: JobId) -> _Watch:
        try:
            return self._watches[job_id]
        except KeyError:
            raise SchedulerError(
                f"job {job_id} is not registered with the poller for {self.host}; "
                "call register() first"
            ) from None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._pending() or self._clock() < self._next_poll):
                    delay = self._next_poll - self._clock() if self._pending() else None
                    self._cond.wait(delay)
                if self._closed:
                    return
            try:
                self.poll_once()
            except Exception:  # keep the one thread alive; the error is logged with its trace
                log.exception("poller for %s: unexpected error; retrying", self.host)
                with self._cond:
                    self._next_poll = self._clock() + self.config.poll_max_s

    def _pending(self) -> list[_Watch]:
        return [w for w in self._watches.values() if w.outcome is None and w.error is None]

    def poll_once(self) -> None:
        """One round: poll all waiting jobs in one call, probe markers of the ones that ended or
        left the queue in one more, hand outcomes to waiters, and schedule the next round."""
        with self._cond:
            watches = self._pending()
        if not watches:
            return
        self.polls += 1
        try:
            statuses = self.scheduler.poll([w.job_id for w in watches])
            now = self._clock()
            probing = [w for w in watches if self._needs_probe(w, statuses, now)]
            probes = self._probe(probing) if probing else []
        except (RemoteError, SchedulerOutputError) as exc:
            self._poll_failed(exc)
            return
        now = self._clock()
        finished = self._decide(watches, probing, probes, now)
        with self._cond:
            self._failing_since = None
            if finished:
                self._backoff.reset()
            delay = self._backoff.next()
            if any(w.left_at is not None and w.outcome is None for w in watches):
                delay = min(delay, max(self.config.poll_min_s, self.config.exit_marker_grace_s / 4))
            self._next_poll = now + delay
            self._cond.notify_all()

    def _needs_probe(self, watch: _Watch, statuses: dict[JobId, JobStatus], now: float) -> bool:
        status = statuses.get(watch.job_id) or JobStatus(JobState.LEFT_QUEUE)
        watch.last = status
        if status.state is JobState.LEFT_QUEUE:
            watch.left_at = watch.left_at if watch.left_at is not None else now
            return True
        watch.left_at = None
        if status.state is JobState.UNKNOWN:
            watch.unknown_since = watch.unknown_since if watch.unknown_since is not None else now
        else:
            watch.unknown_since = None
        return status.state.is_final

    def _probe(self, watches: list[_Watch]) -> list[Probe]:
        boundary = new_boundary()
        pairs = [(w.exit_marker, w.log) for w in watches]
        argv = probe_argv(pairs, self.config.log_tail_lines, boundary)
        done = self.scheduler.runner.run(argv)
        if done.returncode != 0:
            raise SchedulerOutputError(
                f"reading exit markers on {self.host} failed: {done.stderr.strip()}",
                output=done.stdout,
            )
        return parse_probe(done.stdout, boundary, len(pairs))

    def _decide(
        self, watches: list[_Watch], probing: list[_Watch], probes: list[Probe], now: float
    ) -> int:
        by_id = {w.job_id: p for w, p in zip(probing, probes, strict=True)}
        outcomes: dict[JobId, JobOutcome] = {}
        for watch in watches:
            outcome = self._outcome(watch, by_id.get(watch.job_id), now)
            if outcome is not None:
                outcomes[watch.job_id] = outcome
        with self._cond:
            for job_id, outcome in outcomes.items():
                self._watches[job_id].outcome = outcome
                log.info("job %s on %s ended %s", job_id, self.host, outcome.state.value)
            self._cond.notify_all()
        return len(outcomes)

    def _outcome(self, watch: _Watch, probe: Probe | None, now: float) -> JobOutcome | None:
        status = watch.last
        assert status is not None
        tail = probe.log_tail if probe else ""
        marker = probe.exit_code if probe and probe.written else None
        if status.state.is_final:
            state, code = status.state, status.exit_code if status.exit_code is not None else marker
            reason = status.reason or f"the scheduler reports {status.native or state.value}"
            if state is JobState.COMPLETED and code not in (None, 0):
                state, reason = (
                    JobState.FAILED,
                    f"exit marker says {code} though the scheduler says COMPLETED",
                )
            return JobOutcome(watch.job_id, state, code, reason, tail, status.native)
        if status.state is JobState.LEFT_QUEUE and watch.left_at is not None:
            if marker is not None:
                state = JobState.COMPLETED if marker == 0 else JobState.FAILED
                reason = f"left the queue; exit marker {watch.exit_marker} says {marker}"
                return JobOutcome(watch.job_id, state, marker, reason, tail, "LEFT_QUEUE")
            if now - watch.left_at >= self.config.exit_marker_grace_s:
                reason = (
                    f"left the queue and exit marker {watch.exit_marker} was not written within "
                    f"{self.config.exit_marker_grace_s:g} s; the job was killed or its node lost"
                )
                return JobOutcome(watch.job_id, JobState.LOST, None, reason, tail, "LEFT_QUEUE")
        limit = self.config.unknown_state_limit_s
        since = watch.unknown_since
        if status.state is JobState.UNKNOWN and since is not None and now - since >= limit:
            reason = (
                f"the scheduler reported the unknown state {status.native!r} for "
                f"{limit:g} s; check the job by hand"
            )
            return JobOutcome(watch.job_id, JobState.UNKNOWN, None, reason, "", status.native)
        return None

    def _poll_failed(self, exc: Exception) -> None:
        now = self._clock()
        with self._cond:
            self.failed_polls += 1
            if self._failing_since is None:
                self._failing_since = now
                self._backoff.reset()
            failing_for = now - self._failing_since
            log.warning(
                "poll of %s failed (%.0f s so far), retrying: %s", self.host, failing_for, exc
            )
            if failing_for >= self.config.poll_give_up_s:
                error = SchedulerError(
                    f"could not poll the scheduler on {self.host} for {failing_for:.0f} s; last "
                    f"error: {exc}; the jobs may still be running: check the host, then wait again"
                )
                error.__cause__ = exc
                for watch in self._pending():
                    watch.error = error
                self._failing_since = None
            self._next_poll = now + self._backoff.next()
            self._cond.notify_all()


class PollerRegistry:
    """The shared pollers of a process, one per host name; hand each flow the same one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pollers: dict[str, HostPoller] = {}

    def get(self, scheduler: Scheduler, config: SchedulerConfig | None = None) -> HostPoller:
        """The poller for ``scheduler``'s host, made on first use."""
        with self._lock:
            poller = self._pollers.get(scheduler.host)
            if poller is None or poller._closed:
                poller = HostPoller(scheduler, config)
                self._pollers[scheduler.host] = poller
            return poller

    def close(self) -> None:
        """Close every poller (end of the process or of a test)."""
        with self._lock:
            pollers, self._pollers = list(self._pollers.values()), {}
        for poller in pollers:
            poller.close()


pollers = PollerRegistry()
"""The process-wide registry: ``pollers.get(scheduler).wait(job_id)``."""
