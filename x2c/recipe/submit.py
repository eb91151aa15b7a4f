"""Step 4, submit: hand the built job to the scheduler once, recorded before and after."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from x2c import jobdir as jd
from x2c.poller import SUBMITTING, is_live
from x2c.recipe import registry
from x2c.recipe.handle import Handle
from x2c.schedulers import JobId, JobSpec, JobState

log = logging.getLogger(__name__)


def submitting(h: Handle, spec: JobSpec) -> jd.JobRecord:
    """The registry entry written before the scheduler is called: ``submitting``, with the
    build's tag (what a crash from here on is resolved by) and no job id yet."""
    t, pipe = h.t, h.pipe
    return jd.JobRecord(
        job_id="",
        scheduler=h.cfg.scheduler.kind,
        host=t.host,
        pipeline=pipe.name,
        version=pipe.version,
        experiment=t.experiment,
        submitted_at=datetime.now(UTC),
        state=SUBMITTING,
        project=t.project,
        subject=t.subject,
        label=t.label,
        archive=pipe.archive_name,
        tag=spec.tag,
        inputs_digest=registry.inputs_digest(registry.staged_inputs(h)),
        mem_mb=spec.mem_mb,
        walltime_s=spec.walltime_s,
    )


def submit(h: Handle, spec: JobSpec) -> JobId:
    """Submit ``spec`` once. The caller holds the experiment's claim (:mod:`x2c.claims`), so
    no other pass submits it meanwhile: record ``submitting`` with the build's tag (a crash
    from here on is resolved by ``find(tag)``), submit, then record the job id. A job the
    registry already knows as queued or running is returned instead of a new one."""
    sched = h.scheduler
    old = registry.read(h)
    if old is not None and old.job_id and is_live(old.state):
        log.info("%s: job %s is already %s", h.name, old.job_id, old.state.lower())
        return JobId(old.job_id)
    record = submitting(h, spec)
    if old is not None and old.escalate_to is not None:  # the next attempt of an escalation
        record = record.model_copy(update={"attempt": old.attempt + 1, "history": old.history})
    registry.write(h, record)
    job_id = sched.submit(spec)
    registry.update(h, record, job_id=job_id, state=JobState.PENDING.value)
    log.info("%s: submitted job %s on %s", h.name, job_id, h.t.host)
    return job_id
