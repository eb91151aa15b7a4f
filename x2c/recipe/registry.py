"""The job registry entry on Y (``job.json`` beside the job) and what a job left behind (its
exit marker, ``run.env``, the staged inputs' manifest), read and written through the host's own
methods, never ``host.fs``: they turn a connection dropped mid-read into
:class:`~x2c.errors.SSHConnectError`, which passes report and retry. How a job ended is decided
in ONE place, :func:`x2c.poller.judge`; this module only gathers what it judges."""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import time
from collections.abc import Sequence
from typing import Any

from x2c import jobdir as jd
from x2c import xnat
from x2c.errors import JobFailedError
from x2c.poller import LOG_TAIL_CHARS, SUBMITTING, is_live, is_success, judge
from x2c.recipe.handle import Handle
from x2c.schedulers import JobState, JobStatus
from x2c.schedulers.markers import Probe
from x2c.sources import FileRef

log = logging.getLogger(__name__)

INPUTS_MANIFEST = "inputs.json"
"""In the job directory: the staged inputs (path, size, md5), for provenance and for telling
whether a failed job's inputs changed."""


def read(h: Handle) -> jd.JobRecord | None:
    """The job registry entry of ``h`` (None: no job recorded)."""
    return jd.decode_record(h.host.read_bytes(h.jobdir.registry), h.jobdir)


def write(h: Handle, record: jd.JobRecord) -> None:
    """Replace ``h``'s registry entry (atomically)."""
    h.host.write_atomic(h.jobdir.registry, jd.encode_record(record))


def update(h: Handle, record: jd.JobRecord, **fields: Any) -> jd.JobRecord:
    """Write ``record`` with ``fields`` changed; returns the new entry."""
    new = record.model_copy(update=fields)
    write(h, new)
    return new


def run_info(h: Handle) -> jd.RunInfo | None:
    """What the job wrote into ``run.env`` (None before it started)."""
    return jd.decode_run_info(h.host.read_bytes(h.jobdir.run_info))


def write_inputs(h: Handle, files: Sequence[FileRef]) -> None:
    """Record the staged inputs beside the job (:data:`INPUTS_MANIFEST`)."""
    manifest = [{"path": f.path, "size": f.size, "md5": f.md5} for f in files]
    path = posixpath.join(h.jobdir.root, INPUTS_MANIFEST)
    h.host.write_atomic(path, json.dumps(manifest).encode())


def staged_inputs(h: Handle) -> list[FileRef]:
    """The inputs the job was built with (empty before a build)."""
    raw = h.host.read_bytes(posixpath.join(h.jobdir.root, INPUTS_MANIFEST))
    data = None if raw is None else json.loads(raw)
    if not isinstance(data, list):
        return []
    return [FileRef(str(d["path"]), int(d["size"]), d.get("md5")) for d in data]


def inputs_digest(files: Sequence[FileRef]) -> str:
    """One digest of a set of inputs (paths, sizes, md5s): did the inputs change?"""
    text = "\n".join(f"{f.path}\t{f.size}\t{f.md5}" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(text.encode()).hexdigest()


def probe(h: Handle) -> Probe:
    """The exit marker (written? which code?) and the log's tail."""
    code = jd.decode_exit_code(h.host.read_bytes(h.jobdir.exit_code), h.jobdir)
    written = h.host.exists(h.jobdir.exit_code)
    data = h.host.read_bytes(h.jobdir.log, tail=LOG_TAIL_CHARS)
    return Probe(written, code, "" if data is None else data.decode("utf-8", "replace"))


def failure(h: Handle, record: jd.JobRecord, note: str = "") -> JobFailedError:
    """The error that reports ``record``'s failed job, with where its log is."""
    return JobFailedError(
        f"{h.name}: job {record.job_id} on {record.host} ended {record.state} "
        f"(exit {record.exit_code}): {record.reason}; its log is {h.t.host}:{h.jobdir.log}"
        + (note or "; fix the cause, then run again with retry_failed=True"),
        job_id=record.job_id,
        state=record.state,
        exit_code=record.exit_code,
        reason=record.reason,
        log_tail=record.log_tail,
    )


def record_failure(h: Handle, reason: str) -> None:
    """Record in ``h``'s registry entry that its result could not be used (an archive gone,
    damaged or unsafe): the experiment is reported failed until something changes."""
    record = read(h)
    if record is not None:
        update(h, record, state=JobState.FAILED.value, reason=reason)


def resolve_submitting(h: Handle, record: jd.JobRecord) -> jd.JobRecord | None:
    """A claim gone stale left ``submitting``: the job exists (``find(tag)``), ran (its exit
    marker), or was never made (None). Returns the entry as it should now read; writes
    nothing."""
    sched = h.scheduler
    found = sched.find(record.tag) if record.tag else []
    if found:
        job = sorted(found, key=lambda f: f.job_id)[-1]
        if len(found) > 1:
            log.warning(
                "%s: %d jobs carry tag %s; following %s", h.name, len(found), record.tag, job.job_id
            )
        pending = record.model_copy(update={"job_id": job.job_id, "state": "PENDING"})
        return judge(pending, job.status, probe(h), time.time(), sched.config)
    found_probe = probe(h)
    if not found_probe.written:
        return None
    run = run_info(h)
    job_id = (run.job_id if run else None) or record.job_id or "unknown"
    pending = record.model_copy(update={"job_id": job_id, "state": "PENDING"})
    gone = JobStatus(JobState.LEFT_QUEUE)
    return judge(pending, gone, found_probe, time.time(), sched.config)


def check_failed(h: Handle) -> None:
    """Raise :class:`JobFailedError` when ``h``'s last job failed with the current pipeline
    version and the inputs it would select now (nothing changed: do not burn cluster hours
    again); otherwise return (no job, a job of another version, or changed inputs)."""
    record = read(h)
    if record is None or record.version != h.pipe.version:
        return
    if is_live(record.state) or is_success(record.state) or record.state == SUBMITTING:
        return
    selection = xnat.select_inputs(h.rt.xnat, h.t.experiment, h.pipe.inputs)
    if record.inputs_digest != inputs_digest(selection.files):
        log.info("%s: the inputs changed since job %s failed", h.name, record.job_id)
        return
    raise failure(
        h, record, "; inputs and pipeline version unchanged, pass retry_failed=True to run it again"
    )
