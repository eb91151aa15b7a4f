"""Once more, bigger: a job that ended OUT_OF_MEMORY or TIMEOUT is launched again with a larger
request when its pipeline declares an escalation (issue 11; DAX #408)::

    escalation:
      on_oom: {memory: 2x}
      on_timeout: {walltime: 1.5x}
      max_escalations: 1

The larger request is capped by the host's ``max_mem_mb`` / ``max_walltime``; a job that ends
so again after ``max_escalations`` more attempts, that is already at the cap, or that failed for
any other reason is reported, never looped. :func:`next_request` is the one rule; the job
registry entry (:class:`~x2c.jobdir.JobRecord`) records every attempt with its resources.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from x2c.config import HostConfig
from x2c.jobdir import Attempt, JobRecord, Request
from x2c.schedulers.base import JobState

_FACTOR = r"^\d+(\.\d+)?x$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OnOom(_Frozen):
    """How much more memory after OUT_OF_MEMORY (``2x``: twice the last request)."""

    memory: str = Field(default="2x", pattern=_FACTOR)


class OnTimeout(_Frozen):
    """How much more walltime after TIMEOUT (``1.5x``)."""

    walltime: str = Field(default="1.5x", pattern=_FACTOR)


class Escalation(_Frozen):
    """A pipeline's rule for jobs killed for memory or time; no rule, no resubmission."""

    on_oom: OnOom | None = None
    on_timeout: OnTimeout | None = None
    max_escalations: int = Field(default=1, ge=0, le=10)


def _factor(text: str) -> float:
    return float(text[:-1])


def seconds(walltime: str) -> int:
    """``[D-]HH:MM:SS`` in seconds."""
    days, _, hms = walltime.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s


def next_request(
    rule: Escalation | None, host: HostConfig, record: JobRecord
) -> tuple[Request | None, str]:
    """The larger request for the job of ``record`` (ended), or None; with the reason either
    way (for the row and the log)."""
    state = record.state
    if state not in (JobState.OUT_OF_MEMORY.value, JobState.TIMEOUT.value):
        return None, ""
    kind = "memory" if state == JobState.OUT_OF_MEMORY.value else "walltime"
    step = (rule.on_oom if kind == "memory" else rule.on_timeout) if rule else None
    if rule is None:
        return None, ""
    if step is None:
        return None, f"ended {state}; the pipeline's escalation has no rule for it"
    done = record.attempt - 1
    if done >= rule.max_escalations:
        return None, (
            f"ended {state} again after {done} escalation(s) (max_escalations "
            f"{rule.max_escalations}); not resubmitted"
        )
    mem, wall = record.mem_mb, record.walltime_s
    if isinstance(step, OnOom):
        cap = host.max_mem_mb
        new = math.ceil(mem * _factor(step.memory))
        new = min(new, cap) if cap else new
        if new <= mem:
            return None, f"ended {state} at {mem} MB, the host's max_mem_mb; not resubmitted"
        return Request(mem_mb=new, walltime_s=wall), f"{state}: memory {mem} -> {new} MB"
    cap = seconds(host.max_walltime) if host.max_walltime else 0
    new = math.ceil(wall * _factor(step.walltime))
    new = min(new, cap) if cap else new
    if new <= wall:
        return None, f"ended {state} at {wall} s, the host's max_walltime; not resubmitted"
    return Request(mem_mb=mem, walltime_s=new), f"{state}: walltime {wall} -> {new} s"


def after(record: JobRecord, request: Request) -> JobRecord:
    """``record`` (the ended attempt) with that attempt moved to its history and ``request``
    waiting for the next build (:attr:`JobRecord.escalate_to`)."""
    past = Attempt(
        attempt=record.attempt,
        job_id=record.job_id,
        state=record.state,
        mem_mb=record.mem_mb,
        walltime_s=record.walltime_s,
        reason=record.reason,
    )
    return record.model_copy(update={"history": (*record.history, past), "escalate_to": request})
