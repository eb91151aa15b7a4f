"""The recipe: one experiment through select, stage, build, submit, wait, collect, upload, clean.

Each step is a small Prefect-free function that calls ONE layer module, so ``tasks/`` wraps each
in one task. :func:`decide` reconciles an experiment toward the desired state (DESIGN.md, "State
and idempotence") and says which step comes next::

    d = decide(rt, t)                       # SKIP_DONE | ATTACH | COLLECT | SUBMIT
    if d.action is Action.SUBMIT:
        sel = select(rt, t); stage(rt, t, sel); spec = build(rt, t, sel); job = submit(rt, t, spec)
    elif d.action in (Action.ATTACH, Action.COLLECT):
        job = d.job_id
    if d.action is not Action.SKIP_DONE:
        outcome = wait(rt, t, job)           # returns at once for a job already recorded done
        receipt = upload(rt, t, collect(rt, t), outcome)
        clean(rt, t)

What survives a crash of the orchestrator is the job registry entry (``job.json`` in the job
directory on Y, :mod:`x2c.jobdir`), the job itself (detached), the files on Y and the resource on
XNAT. Where a crash happens, and what the rerun's :func:`decide` does:

=====================================  =======================================================
crash                                  the rerun
=====================================  =======================================================
during select/stage/build              SUBMIT; stage skips the files already verified on Y,
                                       build writes a new tag and removes a stale exit marker
after ``submitting`` was recorded,     ``find(tag)`` finds nothing and no exit marker exists:
before sbatch ran                      SUBMIT (the first and only job)
after sbatch, before the registry      ``find(tag)`` finds the job: ATTACH, or COLLECT once it
got the job id                         ended; if the scheduler already forgot it (SLURM's
                                       MinJobAge) the exit marker and run.env prove it ran
while waiting                          one poll confirms it queued/running: ATTACH
after the job ended, unrecorded        read as the poller would (the scheduler's final state,
                                       else the exit marker): COLLECT, or JobFailedError
mid-upload                             the resource has no provenance (INCOMPLETE): COLLECT;
                                       upload replaces the partial resource
after the verified upload, before      SKIP_DONE, and the job directory of the finished job
the registry write or the clean        is removed
=====================================  =======================================================

Two orchestrator processes on one experiment (a watcher run and the nightly, say) cannot both
submit: :func:`submit` holds an atomic ``mkdir`` lock in the job directory on Y and re-reads the
registry under it; a lock older than :data:`STALE_LOCK_MIN` minutes was left by a crash and is
taken over.

A failed job is reported failed again by every rerun (:class:`JobFailedError`, the registry
keeps its state, exit code, reason and log tail) and is resubmitted only when the pipeline
version or the selected inputs changed, or when the caller passes ``retry_failed=True``: a
failing input does not silently burn cluster hours every night, and fixing the input on XNAT or
releasing a new pipeline version is enough to try again.

Secrets: a :class:`Target` holds names only; the XNAT password reaches the HTTP client and
nothing else (job scripts are rendered with ``forbidden=xnat_forbidden(cfg)``, provenance and
:func:`plan` carry the server URL without credentials).
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import posixpath
import secrets
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from x2c import jobdir as jd
from x2c import transfers, xnat
from x2c.archive_check import check_archive
from x2c.errors import (
    IntegrityError,
    JobFailedError,
    NothingToProcessError,
    PipelineError,
    SubmissionError,
    XnatNotFoundError,
)
from x2c.hosts import Host
from x2c.jobscript import (
    effective_runtime,
    find_resume,
    job_argv,
    render_job_script,
    xnat_forbidden,
)
from x2c.ledger import DONE, is_fresh
from x2c.pipelines import Pipeline
from x2c.poller import JobOutcome
from x2c.provenance import build_provenance, public_url

# tasks/ and flows/ name these through the recipe (recipe.Runtime, recipe.runtime(...),
# recipe.close_runtimes()); the explicit "as" keeps them part of its interface for mypy
from x2c.runtime import Runtime as Runtime
from x2c.runtime import close_runtimes as close_runtimes
from x2c.runtime import runtime as runtime
from x2c.schedulers import JobId, JobSpec, JobState, JobStatus
from x2c.schedulers.base import job_name
from x2c.schedulers.slurm import sbatch_argv
from x2c.sources import FileRef

log = logging.getLogger(__name__)

INPUTS_MANIFEST = "inputs.json"
"""In the job directory: the staged inputs (path, size, md5), for provenance and for telling
whether a failed job's inputs changed."""

SUBMITTING = "submitting"
UPLOADED = "uploaded"
"""Registry states of x2c's own besides the scheduler's (``JobState`` values)."""

_LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Target:
    """One experiment to process with one pipeline on one host: names only, never a secret.

    ``experiment`` is the XNAT accession ID (``XNAT_E00001``), ``label`` its label;
    ``last_modified`` is what the listing said (for the nightly ledger; may be empty).
    """

    project: str
    experiment: str
    label: str
    subject: str
    pipeline: str
    host: str
    last_modified: str = ""


class Action(enum.Enum):
    """What :func:`decide` found to be the next step for a target."""

    SKIP_DONE = "skip_done"
    """The verified result of this pipeline version is on XNAT."""
    ATTACH = "attach"
    """A job is queued or running: wait for it, never submit again."""
    COLLECT = "collect"
    """The job finished and its archive is on Y: collect and upload."""
    SUBMIT = "submit"
    """Nothing usable exists: select, stage, build and submit."""


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`: the ``action``, why (a user's sentence), and the job it
    concerns (ATTACH and COLLECT)."""

    action: Action
    reason: str
    job_id: JobId | None = None


# --- helpers ------------------------------------------------------------------------------


def _version() -> str:
    from x2c import __version__  # at call time: x2c/__init__ imports this module

    return __version__


def _jobdir(rt: Runtime, t: Target) -> jd.JobDir:
    return jd.job_dir(rt.host_config(t.host).workdir, t.pipeline, t.experiment)


def _name(t: Target) -> str:
    return f"{t.pipeline} for {t.project}/{t.label}"


# Every file on Y is read and written through the host's own methods, never ``host.fs``: they
# turn a connection dropped mid-read into SSHConnectError, which the tasks retry.


def _read_json(host: Host, path: str) -> Any:
    raw = host.read_bytes(path)
    return None if raw is None else json.loads(raw)


def _read_record(host: Host, jobdir: jd.JobDir) -> jd.JobRecord | None:
    return jd.decode_record(host.read_bytes(jobdir.registry), jobdir)


def _write_record(host: Host, jobdir: jd.JobDir, record: jd.JobRecord) -> None:
    host.write_atomic(jobdir.registry, jd.encode_record(record))


def _read_exit_code(host: Host, jobdir: jd.JobDir) -> int | None:
    return jd.decode_exit_code(host.read_bytes(jobdir.exit_code), jobdir)


def _read_run_info(host: Host, jobdir: jd.JobDir) -> jd.RunInfo | None:
    return jd.decode_run_info(host.read_bytes(jobdir.run_info))


def _inputs_digest(files: Sequence[FileRef]) -> str:
    text = "\n".join(f"{f.path}\t{f.size}\t{f.md5}" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(text.encode()).hexdigest()


def _staged_inputs(host: Host, jobdir: jd.JobDir) -> list[FileRef]:
    data = _read_json(host, posixpath.join(jobdir.root, INPUTS_MANIFEST))
    if not isinstance(data, list):
        return []
    return [FileRef(str(d["path"]), int(d["size"]), d.get("md5")) for d in data]


def _update(host: Host, jobdir: jd.JobDir, record: jd.JobRecord, **fields: Any) -> jd.JobRecord:
    new = record.model_copy(update=fields)
    _write_record(host, jobdir, new)
    return new


def _failure(rt: Runtime, t: Target, record: jd.JobRecord, note: str = "") -> JobFailedError:
    extra = dict(record.model_extra or {})
    code = extra.get("exit_code")
    reason = str(extra.get("reason", ""))
    log_path = _jobdir(rt, t).log
    return JobFailedError(
        f"{_name(t)}: job {record.job_id} on {record.host} ended {record.state} "
        f"(exit {code}): {reason}; its log is {t.host}:{log_path}"
        + (note or "; fix the cause, then run again with retry_failed=True"),
        job_id=record.job_id,
        state=record.state,
        exit_code=code if isinstance(code, int) else None,
        reason=reason,
        log_tail=str(extra.get("log_tail", "")),
    )


# --- listing ------------------------------------------------------------------------------


def _target(e: xnat.Experiment, pipeline: str, host: str) -> Target:
    return Target(e.project, e.id, e.label, e.subject, pipeline, host, e.last_modified)


def targets(
    rt: Runtime,
    project: str,
    pipeline: str,
    host: str,
    experiments: Sequence[str] | None = None,
) -> list[Target]:
    """The targets of ``project`` for ``pipeline`` on ``host``: every experiment, or those
    named in ``experiments`` (accession IDs or labels). One listing request. Raises
    :class:`XnatNotFoundError` naming the experiments the project does not have."""
    rt.pipeline(pipeline)
    rt.host_config(host)
    found = xnat.list_experiments(rt.xnat, project)
    if experiments is None:
        return [_target(e, pipeline, host) for e in found]
    by_name = {e.id: e for e in found} | {e.label: e for e in found}
    missing = [name for name in experiments if name not in by_name]
    if missing:
        raise XnatNotFoundError(
            f"project {project!r} has no experiment {', '.join(map(repr, missing))} "
            "(by accession ID or label); check the names, or the user's access"
        )
    chosen = dict.fromkeys(by_name[name].id for name in experiments)
    return [_target(e, pipeline, host) for e in found if e.id in chosen]


def pending(rt: Runtime, project: str, pipeline: str, host: str) -> list[Target]:
    """The targets of ``project`` not yet done, for the nightly run. One listing, plus a
    ``resource_status`` (2 requests) only for experiments the local ledger does not already
    know as verified done (or as having nothing to process) at their current
    ``last_modified`` and this pipeline version."""
    pipe = rt.pipeline(pipeline)
    known = rt.ledger.entries(project, pipeline)
    todo, done = [], []
    for t in targets(rt, project, pipeline, host):
        if is_fresh(known.get(t.experiment), t.last_modified, pipe.version):
            continue
        status = xnat.resource_status(rt.xnat, t.experiment, pipe.resource, pipe.version)
        if status.done:
            done.append((t.experiment, t.last_modified, DONE, ""))
        else:
            todo.append(t)
    rt.ledger.record(project, pipeline, pipe.version, done)
    log.info("project %s, pipeline %s: %d experiments to process", project, pipeline, len(todo))
    return todo


# --- reconcile ----------------------------------------------------------------------------


def decide(rt: Runtime, t: Target, *, retry_failed: bool = False) -> Decision:
    """Where ``t`` stands and what to do next; never submits, never waits.

    The verified result on XNAT -> SKIP_DONE (removing a leftover job directory of an upload
    that finished); a job queued or running (the registry on Y, confirmed by one poll) ->
    ATTACH; a finished job with its archive -> COLLECT; otherwise SUBMIT. A registry entry
    ``submitting`` (a crash between sbatch and the registry write) is resolved with the
    scheduler's ``find(tag)``, so no duplicate job is ever made. A failed job raises
    :class:`JobFailedError` again, unless its pipeline version or inputs changed or
    ``retry_failed`` is set (then SUBMIT).
    """
    decision = _assess(rt, t, retry_failed=retry_failed, mutate=True)
    log.info("%s: %s (%s)", _name(t), decision.action.value, decision.reason)
    return decision


def _assess(rt: Runtime, t: Target, *, retry_failed: bool, mutate: bool) -> Decision:
    pipe = rt.pipeline(t.pipeline)
    status = xnat.resource_status(rt.xnat, t.experiment, pipe.resource, pipe.version)
    host = rt.host(t.host)
    jobdir = _jobdir(rt, t)
    record = _read_record(host, jobdir)
    if status.done:
        # no ledger entry here: t.last_modified may predate the upload; pending() and
        # upload() record fresh ones
        note = ""
        finished = record is not None and record.state in (JobState.COMPLETED.value, UPLOADED)
        if finished and not rt.settings.keep_workdir:
            if mutate:
                _remove(host, jobdir)
            note = "; the job directory its finished job left is removed"
        return Decision(Action.SKIP_DONE, status.reason + note)
    if record is None:
        return Decision(Action.SUBMIT, f"{status.reason}; no job recorded on {t.host}")
    if record.state == SUBMITTING:
        record = _resolve_submitting(rt, t, jobdir, record, mutate)
        if record is None:
            return Decision(Action.SUBMIT, "an interrupted submission left no job; submitting")
    if record.version != pipe.version and not _live(record.state):
        return Decision(
            Action.SUBMIT, f"the job on {t.host} ran version {record.version}, not {pipe.version}"
        )
    if _live(record.state):
        if mutate:  # the dry run does not poll (a poll of the local scheduler launches jobs)
            record = _refresh(rt, t, jobdir, record, mutate)
        if _live(record.state):
            seen = "is" if mutate else "was last recorded as"
            return Decision(
                Action.ATTACH,
                f"job {record.job_id} {seen} {record.state.lower()}",
                JobId(record.job_id),
            )
    if record.state in (JobState.COMPLETED.value, UPLOADED):
        if host.exists(jobdir.archive(pipe.archive_name)):
            return Decision(
                Action.COLLECT,
                f"job {record.job_id} finished and its archive is on {t.host}; {status.reason}",
                JobId(record.job_id),
            )
        return Decision(Action.SUBMIT, f"job {record.job_id} finished but its archive is gone")
    # the job failed: report it again unless something changed or the caller asks
    if retry_failed:
        return Decision(Action.SUBMIT, f"retrying job {record.job_id} ({record.state}) as asked")
    recorded = (record.model_extra or {}).get("inputs_digest")
    selection = xnat.select_inputs(rt.xnat, t.experiment, pipe.inputs)
    if recorded != _inputs_digest(selection.files):
        return Decision(Action.SUBMIT, f"the inputs changed since job {record.job_id} failed")
    raise _failure(
        rt,
        t,
        record,
        "; inputs and pipeline version unchanged, pass retry_failed=True to run it again",
    )


def _live(state: str) -> bool:
    if state in (SUBMITTING, UPLOADED):
        return False
    try:
        return not JobState(state).is_final
    except ValueError:
        return False


def _resolve_submitting(
    rt: Runtime, t: Target, jobdir: jd.JobDir, record: jd.JobRecord, mutate: bool
) -> jd.JobRecord | None:
    """A crash left ``submitting``: the job exists (find by tag), ran (exit marker), or not."""
    tag = str((record.model_extra or {}).get("tag", ""))
    found = rt.scheduler(t.host).find(tag) if tag else []
    if found:
        job = sorted(found, key=lambda f: f.job_id)[-1]
        if len(found) > 1:
            log.warning(
                "%s: %d jobs carry tag %s; attaching to %s", _name(t), len(found), tag, job.job_id
            )
        new = _with_status(
            rt, t, jobdir, record.model_copy(update={"job_id": job.job_id}), job.status
        )
    else:
        code = _read_exit_code(rt.host(t.host), jobdir)
        if code is None:
            return None
        run = _read_run_info(rt.host(t.host), jobdir)
        job_id = (run.job_id if run else None) or record.job_id or "unknown"
        new = _from_marker(rt, t, jobdir, record.model_copy(update={"job_id": job_id}))
    if mutate:
        _write_record(rt.host(t.host), jobdir, new)
    return new


def _log_tail(host: Host, jobdir: jd.JobDir) -> str:
    data = host.read_bytes(jobdir.log, tail=_LOG_TAIL_CHARS)
    return "" if data is None else data.decode("utf-8", "replace")


def _from_marker(rt: Runtime, t: Target, jobdir: jd.JobDir, record: jd.JobRecord) -> jd.JobRecord:
    """The record of a job that left the queue, as its exit marker tells (no marker: LOST is
    for the poller to decide after its grace period, so the job stays live)."""
    code = _read_exit_code(rt.host(t.host), jobdir)
    if code is None:
        return record.model_copy(update={"state": JobState.PENDING.value})
    state = JobState.COMPLETED if code == 0 else JobState.FAILED
    return _ended(rt, t, jobdir, record, state, code, f"left the queue; exit marker says {code}")


def _ended(
    rt: Runtime,
    t: Target,
    jobdir: jd.JobDir,
    record: jd.JobRecord,
    state: JobState,
    code: int | None,
    reason: str,
) -> jd.JobRecord:
    update: dict[str, Any] = {"state": state.value, "exit_code": code, "reason": reason}
    if not state.is_success:
        update["log_tail"] = _log_tail(rt.host(t.host), jobdir)
    return record.model_copy(update=update)


def _with_status(
    rt: Runtime, t: Target, jobdir: jd.JobDir, record: jd.JobRecord, status: JobStatus
) -> jd.JobRecord:
    """``record`` updated with what the scheduler said, the way the poller reads it: a final
    state is the scheduler's (COMPLETED with a non-zero exit marker is FAILED), a job that left
    the queue is decided by its exit marker."""
    if status.state is JobState.LEFT_QUEUE:
        return _from_marker(rt, t, jobdir, record)
    if not status.state.is_final:
        live = JobState.PENDING if status.state is JobState.UNKNOWN else status.state
        return record.model_copy(update={"state": live.value})
    code = status.exit_code
    if code is None:
        code = _read_exit_code(rt.host(t.host), jobdir)
    state, reason = status.state, status.reason or f"the scheduler reports {status.native}"
    if state is JobState.COMPLETED and code not in (None, 0):
        state, reason = JobState.FAILED, f"exit marker says {code} though the scheduler says done"
    return _ended(rt, t, jobdir, record, state, code, reason)


def _refresh(
    rt: Runtime, t: Target, jobdir: jd.JobDir, record: jd.JobRecord, mutate: bool
) -> jd.JobRecord:
    """Ask the scheduler once about a job the registry says is live."""
    job_id = JobId(record.job_id)
    status = rt.scheduler(t.host).poll([job_id])[job_id]
    new = _with_status(rt, t, jobdir, record, status)
    if mutate and new != record:
        _write_record(rt.host(t.host), jobdir, new)
    return new


# --- the steps ----------------------------------------------------------------------------


def select(rt: Runtime, t: Target) -> xnat.SelectedInputs:
    """The inputs of ``t`` the pipeline declares (2+ requests). Raises
    :class:`~x2c.errors.NothingToProcessError` with the reason when nothing matches; the
    ledger remembers it, so the nightly run skips the experiment until it changes."""
    pipe = rt.pipeline(t.pipeline)
    try:
        selection = xnat.select_inputs(rt.xnat, t.experiment, pipe.inputs)
    except NothingToProcessError as exc:
        if t.last_modified:
            rt.ledger.record_nothing(
                t.project, t.pipeline, t.experiment, t.last_modified, pipe.version, exc.reason
            )
        raise
    log.info("%s: %d input files, %d bytes", _name(t), len(selection.files), selection.total_size)
    return selection


def stage(rt: Runtime, t: Target, selection: xnat.SelectedInputs) -> transfers.StageReport:
    """Stream the selected files from XNAT to the job's ``inputs/`` on Y, verified; files
    already there and right are skipped (so a rerun after a crash costs almost nothing)."""
    cfg = rt.host_config(t.host)
    report = transfers.stage(
        xnat.XnatByteSource(rt.xnat),
        selection.files,
        rt.host(t.host),
        _jobdir(rt, t).inputs,
        max_parallel=max(1, min(cfg.max_transfers, rt.settings.limits.xnat_transfers)),
    )
    log.info(
        "%s: staged %d files (%d bytes), %d already there",
        _name(t),
        report.copied,
        report.bytes_copied,
        report.skipped,
    )
    return report


def _script(rt: Runtime, t: Target, pipe: Pipeline, inputs: Sequence[str]) -> str:
    cfg = rt.host_config(t.host)
    return render_job_script(
        pipe,
        job_dir=_jobdir(rt, t).root,
        subject=t.subject,
        experiment=t.label,
        inputs=inputs,
        runtime=cfg.container_runtime,
        project=t.project,
        resume=find_resume(pipe, inputs),
        path_prepend=cfg.path_prepend,
        forbidden=xnat_forbidden(rt.xnat_config),
        x2c_version=_version(),
    )


def _spec(rt: Runtime, t: Target, pipe: Pipeline, tag: str) -> JobSpec:
    jobdir = _jobdir(rt, t)
    return JobSpec(
        name=job_name(f"x2c-{pipe.name}-{t.label}", 64),
        script_path=jobdir.script,
        workdir=jobdir.root,
        stdout_path=jobdir.scheduler_log,
        exit_marker=jobdir.exit_code,
        tag=tag,
        cpus=pipe.cpus,
        mem_mb=pipe.mem_mb,
        walltime_s=pipe.walltime_seconds,
    )


def build(rt: Runtime, t: Target, selection: xnat.SelectedInputs) -> JobSpec:
    """Render the job script into the job directory on Y (with the inputs manifest beside it),
    remove a stale exit marker and archive, and return the JobSpec to submit. The spec's tag
    is new for every build, so ``find(tag)`` can only ever find this build's job. Refuses
    while the registry says a job is queued or running in that directory (it would pull the
    script and the exit marker from under it)."""
    pipe = rt.pipeline(t.pipeline)
    host = rt.host(t.host)
    jobdir = _jobdir(rt, t)
    current = _read_record(host, jobdir)
    if current is not None and current.job_id and _live(current.state):
        raise PipelineError(
            f"{_name(t)}: job {current.job_id} is {current.state.lower()} in {jobdir.root} on "
            f"{t.host}; attach to it (decide says ATTACH) instead of building a new one"
        )
    inputs = [f.path for f in selection.files]
    script = _script(rt, t, pipe, inputs)
    manifest = [{"path": f.path, "size": f.size, "md5": f.md5} for f in selection.files]
    host.makedirs(jobdir.root)
    host.write_atomic(posixpath.join(jobdir.root, INPUTS_MANIFEST), json.dumps(manifest).encode())
    host.write_atomic(jobdir.script, script.encode())
    for stale in (jobdir.exit_code, jobdir.archive(pipe.archive_name)):
        host.remove(stale)
    nonce = secrets.token_hex(4)
    tag = f"x2c.{jd.safe_component(pipe.name)}.{jd.safe_component(t.experiment)}.{nonce}"
    log.info("%s: wrote %s", _name(t), jobdir.script)
    return _spec(rt, t, pipe, tag)


SUBMIT_LOCK = ".submit-lock"
"""A directory made atomically (mkdir) in the job directory while one process submits."""

STALE_LOCK_MIN = 10
"""A submit lock older than this many minutes was left by a crash and is taken over."""

# exit 0: taken; 75: held by someone else; 66: no job directory. A lock older than $2
# minutes is taken over.
_LOCK = r"""[ -d "${1%/*}" ] || exit 66
mkdir -- "$1" 2>/dev/null && exit 0
[ -n "$(find "$1" -maxdepth 0 -mmin +"$2" 2>/dev/null)" ] && rmdir -- "$1" 2>/dev/null \
  && mkdir -- "$1" 2>/dev/null && exit 0
exit 75
"""


@contextmanager
def _submit_lock(host: Host, jobdir: jd.JobDir, t: Target) -> Iterator[None]:
    """Hold the job directory's submit lock on Y: two orchestrator processes never submit the
    same experiment at once (the registry alone cannot tell them apart)."""
    lock = posixpath.join(jobdir.root, SUBMIT_LOCK)
    argv = ["sh", "-c", _LOCK, "x2c-lock", lock, str(STALE_LOCK_MIN)]
    done = host.runner.run(argv)
    if done.returncode == 66:
        raise SubmissionError(
            f"{_name(t)}: the job directory {jobdir.root} does not exist on {t.host}; "
            "build the job before submitting it",
            argv=argv,
        )
    if done.returncode != 0:
        raise SubmissionError(
            f"{_name(t)}: another x2c process is submitting this experiment on {t.host} "
            f"({lock} exists); run again later, or remove it if no x2c is running",
            stderr=done.stderr,
            argv=argv,
        )
    try:
        yield
    finally:
        host.runner.run(["rmdir", "--", lock])


def submit(rt: Runtime, t: Target, spec: JobSpec) -> JobId:
    """Submit ``spec`` exactly once: under a lock on Y, record ``submitting`` with its tag, look
    for a job already carrying that tag, submit only if there is none, then record the job id.
    A job the registry already knows as queued or running (or that an interrupted submission
    left behind) is returned instead of a new one. Raises :class:`SubmissionError` while
    another orchestrator process is submitting the same experiment."""
    pipe = rt.pipeline(t.pipeline)
    host = rt.host(t.host)
    jobdir = _jobdir(rt, t)
    sched = rt.scheduler(t.host)
    with rt.target_lock(t), _submit_lock(host, jobdir, t):
        old = _read_record(host, jobdir)
        if old is not None and old.state == SUBMITTING:
            old = _resolve_submitting(rt, t, jobdir, old, mutate=True)
        if old is not None and old.job_id and _live(old.state):
            log.info(
                "%s: job %s is already %s; not submitting again",
                _name(t),
                old.job_id,
                old.state.lower(),
            )
            return JobId(old.job_id)
        record = jd.JobRecord.model_validate(
            {
                "job_id": "",
                "scheduler": sched.kind,
                "host": t.host,
                "pipeline": pipe.name,
                "version": pipe.version,
                "experiment": t.experiment,
                "submitted_at": datetime.now(UTC),
                "state": SUBMITTING,
                "project": t.project,
                "subject": t.subject,
                "archive": pipe.archive_name,
                "tag": spec.tag,
                "label": t.label,
                "inputs_digest": _inputs_digest(_staged_inputs(host, jobdir)),
            }
        )
        _write_record(host, jobdir, record)
        found = sched.find(spec.tag)
        if found:
            job_id = found[0].job_id
            log.warning(
                "%s: job %s already carries tag %s; not submitting again",
                _name(t),
                job_id,
                spec.tag,
            )
        else:
            job_id = sched.submit(spec)
        _update(host, jobdir, record, job_id=job_id, state=JobState.PENDING.value)
    log.info("%s: submitted job %s on %s", _name(t), job_id, t.host)
    return job_id


def wait(rt: Runtime, t: Target, job_id: JobId, timeout: float | None = None) -> JobOutcome:
    """Wait for ``job_id`` through the host's shared poller and record how it ended in the
    registry. Returns at once for a job the registry already records as completed. Raises
    :class:`JobFailedError` (state, exit code, reason, log tail) when it did not succeed,
    TimeoutError after ``timeout`` seconds (the job keeps running)."""
    host = rt.host(t.host)
    jobdir = _jobdir(rt, t)
    record = _read_record(host, jobdir)
    if record is not None and record.job_id == job_id and not _live(record.state):
        if record.state in (JobState.COMPLETED.value, UPLOADED):
            extra = record.model_extra or {}
            return JobOutcome(
                job_id,
                JobState.COMPLETED,
                extra.get("exit_code", 0),
                str(extra.get("reason", "recorded as completed")),
                str(extra.get("log_tail", "")),
            )
        if record.state != SUBMITTING:
            raise _failure(rt, t, record)
    poller = rt.poller(t.host)
    poller.register(job_id, exit_marker=jobdir.exit_code, log=jobdir.log)
    outcome = poller.wait(job_id, timeout)
    poller.forget(job_id)
    if record is not None and record.job_id == job_id:
        record = _update(
            host,
            jobdir,
            record,
            state=outcome.state.value,
            exit_code=outcome.exit_code,
            reason=outcome.reason,
            log_tail=outcome.log_tail[-_LOG_TAIL_CHARS:],
        )
    log.info("%s: job %s ended %s", _name(t), job_id, outcome.state.value)
    if not outcome.ok:
        if record is None or record.job_id != job_id:
            outcome.raise_for_state()
        assert record is not None
        raise _failure(rt, t, record)
    return outcome


def collect(rt: Runtime, t: Target) -> FileRef:
    """The job's archive on Y, described there (size and md5, one command) and checked against
    what the job recorded in ``run.env``; its ``path`` is relative to the job directory."""
    pipe = rt.pipeline(t.pipeline)
    host = rt.host(t.host)
    jobdir = _jobdir(rt, t)
    # every member listed and checked on Y before any byte leaves it (issue 9)
    ref = check_archive(host, jobdir.archive(pipe.archive_name), root=jobdir.root).ref
    run = _read_run_info(host, jobdir)
    if (
        run is not None
        and run.archive_md5
        and (run.archive_md5, run.archive_size)
        != (
            ref.md5,
            ref.size,
        )
    ):
        raise IntegrityError(
            f"{_name(t)}: archive {ref.path} on {t.host} is {ref.size} bytes md5 {ref.md5}, but "
            f"the job recorded {run.archive_size} bytes md5 {run.archive_md5}; rerun the job "
            "(pass retry_failed=True) or inspect the job directory",
            name=ref.path,
            expected=str(run.archive_md5),
            actual=str(ref.md5),
        )
    log.info("%s: archive %s, %d bytes, md5 %s", _name(t), ref.path, ref.size, ref.md5)
    return ref


def _provenance(rt: Runtime, t: Target, record: jd.JobRecord | None) -> dict[str, Any]:
    pipe = rt.pipeline(t.pipeline)
    cfg = rt.host_config(t.host)
    host = rt.host(t.host)
    jobdir = _jobdir(rt, t)
    inputs = _staged_inputs(host, jobdir)
    runtime_ = effective_runtime(pipe, cfg.container_runtime)
    argv = job_argv(
        pipe,
        job_dir=jobdir.root,
        subject=t.subject,
        experiment=t.label,
        inputs=[f.path for f in inputs],
        runtime=runtime_,
        project=t.project,
        resume=find_resume(pipe, [f.path for f in inputs]),
    )
    return build_provenance(
        pipe,
        runtime=runtime_,
        image_digest=rt.image_digest(t.host, pipe),
        argv=argv,
        inputs=inputs,
        scheduler=cfg.scheduler.kind,
        job_id=record.job_id if record else None,
        host=t.host,
        run=_read_run_info(host, jobdir),
        x2c_version=_version(),
        source_url=rt.xnat_config.url,
        project=t.project,
        subject=t.subject,
        experiment=t.label,
    )


def upload(
    rt: Runtime, t: Target, archive: FileRef, outcome: JobOutcome | None = None
) -> xnat.UploadReceipt:
    """Stream the archive from Y to XNAT as the pipeline's result resource (replacing a partial
    one), with its provenance written last, verified by listing it back; then record
    ``uploaded`` in the registry and the experiment in the ledger. ``outcome`` may be None
    (COLLECT after a restart): the registry and ``run.env`` supply the facts."""
    pipe = rt.pipeline(t.pipeline)
    host = rt.host(t.host)
    jobdir = _jobdir(rt, t)
    record = _read_record(host, jobdir)
    if record is not None and record.version != pipe.version:
        raise PipelineError(
            f"{_name(t)}: the job on {t.host} ran pipeline version {record.version}, the "
            f"current one is {pipe.version}; run again to resubmit"
        )
    if outcome is not None and not outcome.ok:
        outcome.raise_for_state()
    provenance = _provenance(rt, t, record)
    receipt = xnat.upload_files(
        rt.xnat,
        t.experiment,
        pipe.resource,
        [(archive, transfers.HostByteSource(host, jobdir.root))],
        provenance=provenance,
        version=pipe.version,
        on_exists="replace",
    )
    if record is not None:
        _update(host, jobdir, record, state=UPLOADED)
    modified = xnat.get_experiment(rt.xnat, t.experiment).last_modified
    rt.ledger.record_done(t.project, t.pipeline, t.experiment, modified, pipe.version)
    log.info("%s: uploaded to %s", _name(t), receipt.uri)
    return receipt


def _remove(host: Host, jobdir: jd.JobDir) -> None:
    done = host.runner.run(["rm", "-rf", "--", jobdir.root])
    if done.returncode != 0:
        log.warning("could not remove %s on %s: %s", jobdir.root, host.name, done.stderr.strip())


def clean(rt: Runtime, t: Target) -> bool:
    """Remove the job directory on Y after a verified upload, unless the settings say
    ``keep_workdir``; refuses while the registry says a job is still queued or running.
    Returns whether the directory was removed."""
    host = rt.host(t.host)
    jobdir = _jobdir(rt, t)
    if rt.settings.keep_workdir:
        log.info("%s: keeping %s on %s (keep_workdir)", _name(t), jobdir.root, t.host)
        return False
    record = _read_record(host, jobdir)
    if record is not None and _live(record.state):
        raise PipelineError(
            f"{_name(t)}: job {record.job_id} is still {record.state.lower()}; not removing "
            f"{jobdir.root}"
        )
    _remove(host, jobdir)
    log.info("%s: removed %s on %s", _name(t), jobdir.root, t.host)
    return True


# --- dry run ------------------------------------------------------------------------------


def _submit_line(rt: Runtime, t: Target, spec: JobSpec) -> str:
    cfg = rt.host_config(t.host)
    if cfg.scheduler.kind == "slurm":
        return "submit: " + shlex.join(sbatch_argv(spec, cfg.scheduler))
    return (
        f"submit: {cfg.scheduler.kind} job {spec.name} running bash {shlex.quote(spec.script_path)}"
    )


def plan(rt: Runtime, t: Target) -> list[str]:
    """The dry run of ``t``: every request, transfer and command it WOULD make, and the job
    script it would submit, as lines of text. Changes nothing (read-only XNAT requests and
    file reads on Y only); never shows a password."""
    pipe = rt.pipeline(t.pipeline)
    cfg = rt.host_config(t.host)
    jobdir = _jobdir(rt, t)
    server = public_url(rt.xnat_config.url)
    where = f"{cfg.ssh or t.host}:{shlex.quote(jobdir.root)}"
    lines = [f"# {_name(t)} ({t.experiment}) on {t.host}, pipeline version {pipe.version}"]
    try:
        decision = _assess(rt, t, retry_failed=False, mutate=False)
    except JobFailedError as exc:
        return [*lines, f"report failed: {exc}"]
    lines.append(f"decide: {decision.action.value}: {decision.reason}")
    if decision.action is Action.SKIP_DONE:
        return lines
    if decision.action is Action.SUBMIT:
        try:
            selection = xnat.select_inputs(rt.xnat, t.experiment, pipe.inputs)
        except NothingToProcessError as exc:
            return [*lines, f"skip: {exc}"]
        lines.append(f"run: mkdir -p {shlex.quote(jobdir.inputs)} on {t.host}")
        for f in selection.files:
            lines.append(
                f"transfer: GET {server}{f.uri} -> {where}/{jd.INPUTS}/{f.path} "
                f"({f.size} bytes, md5 {f.md5}; skipped if already there and verified)"
            )
        script = _script(rt, t, pipe, [f.path for f in selection.files])
        spec = _spec(rt, t, pipe, f"x2c.{pipe.name}.{t.experiment}.<new>")
        lines.append(f"write: {where}/{INPUTS_MANIFEST} (the staged files, size and md5)")
        lines.append(f"write: {where}/{jd.JOB_SCRIPT}:")
        lines += [f"  | {line}" for line in script.splitlines()]
        lines.append(f"write: {where}/{jd.REGISTRY} (state submitting, with the job's tag)")
        lines.append(_submit_line(rt, t, spec))
        lines.append(f"write: {where}/{jd.REGISTRY} (the job id, state PENDING)")
    if decision.action in (Action.SUBMIT, Action.ATTACH):
        lines.append(f"wait: poll {cfg.scheduler.kind} on {t.host} until the job ends")
    resource = f"{server}/data/experiments/{t.experiment}/resources/{pipe.resource}"
    lines += [
        f"collect: md5sum {where}/{pipe.archive_name}; compare with {jd.RUN_INFO}",
        f"upload: DELETE {resource}?removeFiles=true (a partial or outdated result)",
        f"upload: PUT {resource}",
        f"upload: PUT {resource}/files/{pipe.archive_name} <- {where}/{pipe.archive_name}",
        f"upload: GET {resource}/files (verify name, size, md5)",
        f"upload: PUT {resource}/files/provenance.json; GET {resource}/files (verify)",
        f"upload: GET {server}/data/experiments?ID={t.experiment} (for the nightly ledger)",
        f"clean: {'keep' if rt.settings.keep_workdir else 'rm -rf'} {where}",
    ]
    return lines
