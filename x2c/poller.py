"""How a job ended, decided in ONE place, and the one poll per host per pass that feeds it.

Nobody waits inside a job's lifetime. A pass asks a host's scheduler about every x2c job there
in one call (:func:`poll_jobs`), reads the exit markers and log tails of the jobs that ended or
left the queue in one more, and :func:`judge` turns each answer into the job's registry entry:

- a final scheduler state is the job's end, except that COMPLETED with a non-zero exit marker
  is FAILED (the script's own word wins over the scheduler's);
- a job the scheduler no longer lists (SLURM's ``MinJobAge``, a purged local job) ended as its
  exit marker says; with no marker it stays live until ``exit_marker_grace_s`` has passed since
  a pass first saw it gone (recorded in the entry, so the grace spans passes and processes),
  then it is LOST (killed, or its node lost);
- a state x2c does not know is never success: after ``unknown_state_limit_s`` it is FAILED.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from x2c.config import SchedulerConfig
from x2c.errors import SchedulerOutputError
from x2c.jobdir import JobDir, JobRecord
from x2c.schedulers import JobId, JobState, JobStatus, Scheduler
from x2c.schedulers.markers import Probe, new_boundary, parse_probe, probe_argv

log = logging.getLogger(__name__)

SUBMITTING = "submitting"
UPLOADED = "uploaded"
"""Registry states of x2c's own besides the scheduler's (``JobState`` values)."""

LOG_TAIL_CHARS = 4000


def is_live(state: str) -> bool:
    """True while a registry ``state`` is a job queued or running (not x2c's own states)."""
    if state in (SUBMITTING, UPLOADED):
        return False
    try:
        return not JobState(state).is_final
    except ValueError:
        return False


def is_success(state: str) -> bool:
    """True for a registry ``state`` that means the job completed (uploaded or not)."""
    return state in (JobState.COMPLETED.value, UPLOADED)


def needs_probe(status: JobStatus) -> bool:
    """Whether the job's exit marker and log tail are needed to judge ``status``."""
    return status.state is JobState.LEFT_QUEUE or status.state.is_final


def _ended(
    record: JobRecord, state: JobState, code: int | None, reason: str, tail: str
) -> JobRecord:
    return record.model_copy(
        update={
            "state": state.value,
            "exit_code": code,
            "reason": reason,
            "log_tail": "" if state.is_success else tail[-LOG_TAIL_CHARS:],
            "left_queue_at": None,
            "unknown_since": None,
        }
    )


def judge(
    record: JobRecord,
    status: JobStatus,
    probe: Probe | None,
    now: float,
    config: SchedulerConfig,
) -> JobRecord:
    """``record`` (a live job) updated with what the scheduler said (``status``) and, for a job
    that ended or left the queue, its exit marker and log tail (``probe``); ``now`` is epoch
    seconds. The only place that decides how a job ended."""
    tail = probe.log_tail if probe else ""
    marker = probe.exit_code if probe is not None and probe.written else None
    if status.state is JobState.LEFT_QUEUE:
        if marker is not None:
            state = JobState.COMPLETED if marker == 0 else JobState.FAILED
            return _ended(record, state, marker, f"left the queue; exit marker says {marker}", tail)
        since = record.left_queue_at if record.left_queue_at is not None else now
        if now - since >= config.exit_marker_grace_s:
            reason = (
                f"left the queue and its exit marker was not written within "
                f"{config.exit_marker_grace_s:g} s; the job was killed or its node lost"
            )
            return _ended(record, JobState.LOST, None, reason, tail)
        return record.model_copy(update={"left_queue_at": since})
    if status.state is JobState.UNKNOWN:
        since = record.unknown_since if record.unknown_since is not None else now
        if now - since >= config.unknown_state_limit_s:
            reason = (
                f"the scheduler reported the unknown state {status.native!r} for "
                f"{config.unknown_state_limit_s:g} s; check the job by hand"
            )
            return _ended(record, JobState.FAILED, None, reason, tail)
        return record.model_copy(update={"unknown_since": since})
    if not status.state.is_final:
        update = {"state": status.state.value, "left_queue_at": None, "unknown_since": None}
        return record.model_copy(update=update)
    code = status.exit_code if status.exit_code is not None else marker
    state, reason = (
        status.state,
        status.reason or f"the scheduler reports {status.native or status.state.value}",
    )
    if state is JobState.COMPLETED and (code not in (None, 0) or marker not in (None, 0)):
        # the script's own word wins: a non-zero marker fails a job the scheduler calls done
        code = marker if marker not in (None, 0) else code
        state, reason = JobState.FAILED, f"exit marker says {code} though the scheduler says done"
    return _ended(record, state, code, reason, tail)


@dataclass(frozen=True)
class Watched:
    """A live job a pass asks about: its registry entry and job directory."""

    record: JobRecord
    jobdir: JobDir


def poll_jobs(
    scheduler: Scheduler, jobs: Mapping[str, Watched], now: float, *, observe: bool = False
) -> dict[str, JobRecord]:
    """Every job of ``jobs`` (key -> live job) judged after ONE status call for all of them
    and one probe of the markers of those that ended; returns the entries that changed.
    ``observe`` asks without side effects (:meth:`Scheduler.observe`)."""
    live = {k: w for k, w in jobs.items() if w.record.job_id and is_live(w.record.state)}
    if not live:
        return {}
    ask = scheduler.observe if observe else scheduler.poll
    statuses = ask([JobId(w.record.job_id) for w in live.values()])
    gone = JobStatus(JobState.LEFT_QUEUE)
    status_of = {k: statuses.get(JobId(w.record.job_id), gone) for k, w in live.items()}
    probing = [k for k, s in status_of.items() if needs_probe(s)]
    probes: dict[str, Probe] = {}
    if probing:
        boundary = new_boundary()
        pairs = [(live[k].jobdir.exit_code, live[k].jobdir.log) for k in probing]
        argv = probe_argv(pairs, scheduler.config.log_tail_lines, boundary)
        done = scheduler.runner.run(argv)
        if done.returncode != 0:
            raise SchedulerOutputError(
                f"reading exit markers on {scheduler.host} failed: {done.stderr.strip()}",
                output=done.stdout,
            )
        probes = dict(zip(probing, parse_probe(done.stdout, boundary, len(pairs)), strict=True))
    changed: dict[str, JobRecord] = {}
    for key, watched in live.items():
        new = judge(watched.record, status_of[key], probes.get(key), now, scheduler.config)
        if new != watched.record:
            changed[key] = new
            if not is_live(new.state):
                log.info("job %s on %s ended %s", new.job_id, scheduler.host, new.state)
    return changed
