"""The recipe's steps for one experiment: select, stage, build, submit, collect, upload, clean,
and the dry run (:func:`plan`). Each is a small Prefect-free function that calls ONE layer
module; :mod:`x2c.reconcile` runs them in short passes and ``tasks/`` wraps each pass phase.

What survives a crash of the orchestrator is the experiment's claim and job registry entry
(``inflight`` and ``job.json`` in the job directory on Y, :mod:`x2c.claims`, :mod:`x2c.jobdir`),
the job itself (detached), the files on Y and the resource on XNAT. Where a pass is killed, and
what the next pass does:

=====================================  =======================================================
killed                                 the next pass
=====================================  =======================================================
after claiming, during select/stage/   the claim has no job; once it is ``claim_stale_s`` old
build                                  one pass takes it over and launches again (stage skips
                                       the files already verified on Y, build writes a new tag)
after ``submitting`` was recorded,     the stale claim's ``find(tag)`` finds nothing and no
before sbatch ran                      exit marker exists: launched again (the only job)
after sbatch, before the registry      ``find(tag)`` finds the job: in flight, or ended; if
got the job id                         the scheduler already forgot it (SLURM's MinJobAge) the
                                       exit marker and run.env tell how it ended
while the job runs                     the poll sees it queued/running: nothing to do
after the job ended, unrecorded        the poll judges it (:func:`x2c.poller.judge`)
mid-upload                             the resource has no provenance (INCOMPLETE): the
                                       finishing claim goes stale, the upload is redone
after the verified upload, before      the result is DONE on XNAT: kept as it is, the job
the clean                              directory is removed
=====================================  =======================================================

A failed job is reported failed again by every pass (the registry keeps its state, exit code,
reason and log tail; the ledger answers without a request) and is launched again only when the
pipeline version or the selected inputs changed, or when the caller passes
``retry_failed=True``: a failing input does not silently burn cluster hours every night.

Secrets: a :class:`Target` holds names only; the XNAT password reaches the HTTP client and
nothing else (job scripts are rendered with ``forbidden=xnat_forbidden(cfg)``, provenance and
:func:`plan` carry the server URL without credentials).
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import secrets
import time
from collections.abc import Sequence
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
    XnatNotFoundError,
)
from x2c.hosts import Host
from x2c.jobenv import job_env_names
from x2c.jobscript import (
    effective_runtime,
    find_resume,
    job_argv,
    render_job_script,
    xnat_forbidden,
)
from x2c.pipelines import Pipeline
from x2c.poller import SUBMITTING, UPLOADED, is_live, is_success, judge
from x2c.provenance import build_provenance

# tasks/ and flows/ name these through the recipe (recipe.Runtime, recipe.runtime(...),
# recipe.close_runtimes()); the explicit "as" keeps them part of its interface for mypy
from x2c.runtime import Runtime as Runtime
from x2c.runtime import close_runtimes as close_runtimes
from x2c.runtime import runtime as runtime
from x2c.schedulers import JobId, JobSpec, JobState, JobStatus
from x2c.schedulers.base import job_name
from x2c.schedulers.markers import Probe
from x2c.sources import FileRef

log = logging.getLogger(__name__)

INPUTS_MANIFEST = "inputs.json"
"""In the job directory: the staged inputs (path, size, md5), for provenance and for telling
whether a failed job's inputs changed."""

_LOG_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Target:
    """One experiment to process with one pipeline on one host: names only, never a secret.

    ``experiment`` is the XNAT accession ID (``XNAT_E00001``), ``label`` its label;
    ``last_modified`` is what the listing said (for the ledger; may be empty).
    """

    project: str
    experiment: str
    label: str
    subject: str
    pipeline: str
    host: str
    last_modified: str = ""
    inserted: str = ""
    """XNAT's ``insert_date``: passes submit the oldest sessions first."""


# --- helpers ------------------------------------------------------------------------------


def _version() -> str:
    from x2c import __version__  # at call time: x2c/__init__ imports this module

    return __version__


def jobdir_of(rt: Runtime, t: Target) -> jd.JobDir:
    """The job directory of ``t`` on its host."""
    return jd.job_dir(rt.host_config(t.host).workdir, t.pipeline, t.experiment)


def name_of(t: Target) -> str:
    """``<pipeline> for <project>/<label>``: how messages name an experiment's work."""
    return f"{t.pipeline} for {t.project}/{t.label}"


# Every file on Y is read and written through the host's own methods, never ``host.fs``: they
# turn a connection dropped mid-read into SSHConnectError, which passes report and retry.


def _read_json(host: Host, path: str) -> Any:
    raw = host.read_bytes(path)
    return None if raw is None else json.loads(raw)


def _read_record(host: Host, jobdir: jd.JobDir) -> jd.JobRecord | None:
    return jd.decode_record(host.read_bytes(jobdir.registry), jobdir)


def _write_record(host: Host, jobdir: jd.JobDir, record: jd.JobRecord) -> None:
    host.write_atomic(jobdir.registry, jd.encode_record(record))


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
    log_path = jobdir_of(rt, t).log
    return JobFailedError(
        f"{name_of(t)}: job {record.job_id} on {record.host} ended {record.state} "
        f"(exit {record.exit_code}): {record.reason}; its log is {t.host}:{log_path}"
        + (note or "; fix the cause, then run again with retry_failed=True"),
        job_id=record.job_id,
        state=record.state,
        exit_code=record.exit_code,
        reason=record.reason,
        log_tail=record.log_tail,
    )


def read_record(rt: Runtime, t: Target) -> jd.JobRecord | None:
    """The job registry entry of ``t`` on its host (None: no job recorded)."""
    return _read_record(rt.host(t.host), jobdir_of(rt, t))


def record_failure(rt: Runtime, t: Target, reason: str) -> None:
    """Record in ``t``'s registry entry that its result could not be used (an archive gone,
    damaged or unsafe): the experiment is reported failed until something changes."""
    host = rt.host(t.host)
    jobdir = jobdir_of(rt, t)
    record = _read_record(host, jobdir)
    if record is not None:
        _update(host, jobdir, record, state=JobState.FAILED.value, reason=reason)


# --- listing ------------------------------------------------------------------------------


def choose(
    found: Sequence[xnat.Experiment],
    project: str,
    pipeline: str,
    host: str,
    experiments: Sequence[str] | None = None,
) -> list[Target]:
    """The targets of a project listing ``found``: every experiment, or those named in
    ``experiments`` (accession IDs or labels). Raises :class:`XnatNotFoundError` naming the
    experiments the project does not have."""

    def target(e: xnat.Experiment) -> Target:
        return Target(
            e.project, e.id, e.label, e.subject, pipeline, host, e.last_modified, e.insert_date
        )

    if experiments is None:
        return [target(e) for e in found]
    by_name = {e.id: e for e in found} | {e.label: e for e in found}
    missing = [name for name in experiments if name not in by_name]
    if missing:
        raise XnatNotFoundError(
            f"project {project!r} has no experiment {', '.join(map(repr, missing))} "
            "(by accession ID or label); check the names, or the user's access"
        )
    chosen = dict.fromkeys(by_name[name].id for name in experiments)
    return [target(e) for e in found if e.id in chosen]


def targets(
    rt: Runtime,
    project: str,
    pipeline: str,
    host: str,
    experiments: Sequence[str] | None = None,
) -> list[Target]:
    """The targets of ``project`` for ``pipeline`` on ``host`` (see :func:`choose`): one
    listing request."""
    rt.pipeline(pipeline)
    rt.host_config(host)
    return choose(xnat.list_experiments(rt.xnat, project), project, pipeline, host, experiments)


# --- what a job left behind -----------------------------------------------------------------


def _probe(host: Host, jobdir: jd.JobDir) -> Probe:
    code = jd.decode_exit_code(host.read_bytes(jobdir.exit_code), jobdir)
    written = host.exists(jobdir.exit_code)
    data = host.read_bytes(jobdir.log, tail=_LOG_TAIL_CHARS)
    return Probe(written, code, "" if data is None else data.decode("utf-8", "replace"))


def resolve_submitting(rt: Runtime, t: Target, record: jd.JobRecord) -> jd.JobRecord | None:
    """A claim gone stale left ``submitting``: the job exists (``find(tag)``), ran (its exit
    marker), or was never made (None). Returns the entry as it should now read; writes
    nothing."""
    sched = rt.scheduler(t.host)
    found = sched.find(record.tag) if record.tag else []
    host = rt.host(t.host)
    jobdir = jobdir_of(rt, t)
    if found:
        job = sorted(found, key=lambda f: f.job_id)[-1]
        if len(found) > 1:
            log.warning(
                "%s: %d jobs carry tag %s; following %s",
                name_of(t),
                len(found),
                record.tag,
                job.job_id,
            )
        pending = record.model_copy(update={"job_id": job.job_id, "state": "PENDING"})
        return judge(pending, job.status, _probe(host, jobdir), time.time(), sched.config)
    probe = _probe(host, jobdir)
    if not probe.written:
        return None
    run = _read_run_info(host, jobdir)
    job_id = (run.job_id if run else None) or record.job_id or "unknown"
    pending = record.model_copy(update={"job_id": job_id, "state": "PENDING"})
    gone = JobStatus(JobState.LEFT_QUEUE)
    return judge(pending, gone, probe, time.time(), sched.config)


def check_failed(rt: Runtime, t: Target) -> None:
    """Raise :class:`JobFailedError` when ``t``'s last job failed with the current pipeline
    version and the inputs it would select now (nothing changed: do not burn cluster hours
    again); otherwise return (no job, a job of another version, or changed inputs)."""
    pipe = rt.pipeline(t.pipeline)
    record = read_record(rt, t)
    if record is None or record.version != pipe.version:
        return
    if is_live(record.state) or is_success(record.state) or record.state == SUBMITTING:
        return
    selection = xnat.select_inputs(rt.xnat, t.experiment, pipe.inputs)
    if record.inputs_digest != _inputs_digest(selection.files):
        log.info("%s: the inputs changed since job %s failed", name_of(t), record.job_id)
        return
    raise _failure(
        rt,
        t,
        record,
        "; inputs and pipeline version unchanged, pass retry_failed=True to run it again",
    )


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
    log.info("%s: %d input files, %d bytes", name_of(t), len(selection.files), selection.total_size)
    return selection


def stage(rt: Runtime, t: Target, selection: xnat.SelectedInputs) -> transfers.StageReport:
    """Stream the selected files from XNAT to the job's ``inputs/`` on Y, verified; files
    already there and right are skipped (so a rerun after a crash costs almost nothing)."""
    cfg = rt.host_config(t.host)
    report = transfers.stage(
        xnat.XnatByteSource(rt.xnat),
        selection.files,
        rt.host(t.host),
        jobdir_of(rt, t).inputs,
        max_parallel=max(1, min(cfg.max_transfers, rt.settings.limits.xnat_transfers)),
    )
    log.info(
        "%s: staged %d files (%d bytes), %d already there",
        name_of(t),
        report.copied,
        report.bytes_copied,
        report.skipped,
    )
    return report


def render_script(rt: Runtime, t: Target, pipe: Pipeline, inputs: Sequence[str]) -> str:
    """The job script of ``t`` for these staged ``inputs`` (the password never in it)."""
    cfg = rt.host_config(t.host)
    return render_job_script(
        pipe,
        job_dir=jobdir_of(rt, t).root,
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


def job_spec(
    rt: Runtime, t: Target, pipe: Pipeline, tag: str, request: jd.Request | None = None
) -> JobSpec:
    """What the scheduler needs to run ``t``'s script: resources, tag, the env names."""
    jobdir = jobdir_of(rt, t)
    return JobSpec(
        name=job_name(f"x2c-{pipe.name}-{t.label}", 64),
        script_path=jobdir.script,
        workdir=jobdir.root,
        stdout_path=jobdir.scheduler_log,
        exit_marker=jobdir.exit_code,
        tag=tag,
        cpus=pipe.cpus,
        mem_mb=request.mem_mb if request else pipe.mem_mb,
        walltime_s=request.walltime_s if request else pipe.walltime_seconds,
        env=job_env_names(pipe.passenv),
    )


def build(rt: Runtime, t: Target, selection: xnat.SelectedInputs) -> JobSpec:
    """Render the job script into the job directory on Y (with the inputs manifest beside it),
    remove a stale exit marker and archive, and return the JobSpec to submit. The spec's tag
    is new for every build, so ``find(tag)`` can only ever find this build's job. Refuses
    while the registry says a job is queued or running in that directory (it would pull the
    script and the exit marker from under it)."""
    pipe = rt.pipeline(t.pipeline)
    host = rt.host(t.host)
    jobdir = jobdir_of(rt, t)
    current = _read_record(host, jobdir)
    if current is not None and current.job_id and is_live(current.state):
        raise PipelineError(
            f"{name_of(t)}: job {current.job_id} is {current.state.lower()} in {jobdir.root} on "
            f"{t.host}; attach to it (decide says ATTACH) instead of building a new one"
        )
    inputs = [f.path for f in selection.files]
    script = render_script(rt, t, pipe, inputs)
    manifest = [{"path": f.path, "size": f.size, "md5": f.md5} for f in selection.files]
    host.makedirs(jobdir.root)
    host.write_atomic(posixpath.join(jobdir.root, INPUTS_MANIFEST), json.dumps(manifest).encode())
    host.write_atomic(jobdir.script, script.encode())
    for stale in (jobdir.exit_code, jobdir.archive(pipe.archive_name)):
        host.remove(stale)
    nonce = secrets.token_hex(4)
    tag = f"x2c.{jd.safe_component(pipe.name)}.{jd.safe_component(t.experiment)}.{nonce}"
    log.info("%s: wrote %s", name_of(t), jobdir.script)
    # an escalated attempt (x2c.escalation) asks for what the survey decided
    return job_spec(rt, t, pipe, tag, current.escalate_to if current is not None else None)


def submit(rt: Runtime, t: Target, spec: JobSpec) -> JobId:
    """Submit ``spec`` once. The caller holds the experiment's claim (:mod:`x2c.claims`), so
    no other pass submits it meanwhile: record ``submitting`` with the build's tag (a crash
    from here on is resolved by ``find(tag)``), submit, then record the job id. A job the
    registry already knows as queued or running is returned instead of a new one."""
    pipe = rt.pipeline(t.pipeline)
    host = rt.host(t.host)
    jobdir = jobdir_of(rt, t)
    sched = rt.scheduler(t.host)
    old = _read_record(host, jobdir)
    if old is not None and old.job_id and is_live(old.state):
        log.info("%s: job %s is already %s", name_of(t), old.job_id, old.state.lower())
        return JobId(old.job_id)
    record = jd.JobRecord(
        job_id="",
        scheduler=sched.kind,
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
        inputs_digest=_inputs_digest(_staged_inputs(host, jobdir)),
        mem_mb=spec.mem_mb,
        walltime_s=spec.walltime_s,
    )
    if old is not None and old.escalate_to is not None:  # the next attempt of an escalation
        record = record.model_copy(update={"attempt": old.attempt + 1, "history": old.history})
    _write_record(host, jobdir, record)
    job_id = sched.submit(spec)
    _update(host, jobdir, record, job_id=job_id, state=JobState.PENDING.value)
    log.info("%s: submitted job %s on %s", name_of(t), job_id, t.host)
    return job_id


def collect(rt: Runtime, t: Target) -> FileRef:
    """The job's archive on Y, described there (size and md5, one command) and checked against
    what the job recorded in ``run.env``; its ``path`` is relative to the job directory."""
    pipe = rt.pipeline(t.pipeline)
    host = rt.host(t.host)
    jobdir = jobdir_of(rt, t)
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
            f"{name_of(t)}: archive {ref.path} on {t.host} is {ref.size} bytes md5 {ref.md5}, but "
            f"the job recorded {run.archive_size} bytes md5 {run.archive_md5}; rerun the job "
            "(pass retry_failed=True) or inspect the job directory",
            name=ref.path,
            expected=str(run.archive_md5),
            actual=str(ref.md5),
        )
    log.info("%s: archive %s, %d bytes, md5 %s", name_of(t), ref.path, ref.size, ref.md5)
    return ref


def _provenance(
    rt: Runtime, t: Target, record: jd.JobRecord | None, archive: FileRef
) -> dict[str, Any]:
    pipe = rt.pipeline(t.pipeline)
    cfg = rt.host_config(t.host)
    host = rt.host(t.host)
    jobdir = jobdir_of(rt, t)
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
        archive=archive,
        attempts=_attempts(record),
    )


def _attempts(record: jd.JobRecord | None) -> list[dict[str, Any]]:
    """Every attempt of the job in ``record`` (escalations first), for the provenance."""
    if record is None:
        return []
    last = jd.Attempt(
        attempt=record.attempt,
        job_id=record.job_id,
        state=JobState.COMPLETED.value,
        mem_mb=record.mem_mb,
        walltime_s=record.walltime_s,
    )
    return [a.model_dump() for a in (*record.history, last)]


def upload(
    rt: Runtime, t: Target, archive: FileRef, *, found: xnat.ResourceState | None = None
) -> xnat.UploadReceipt:
    """Stream the archive from Y to XNAT as the pipeline's result resource (replacing a partial
    or outdated one: the caller checked it is not a verified result of this version and says
    what it ``found``: a resource found missing is created, and one made meanwhile by another
    run is a conflict, never deleted; anything else, or None, is replaced), with its
    provenance written last, verified by listing it back; then record ``uploaded`` in the
    registry and the experiment in the ledger. The registry and ``run.env`` supply the
    job's facts."""
    pipe = rt.pipeline(t.pipeline)
    host = rt.host(t.host)
    jobdir = jobdir_of(rt, t)
    record = _read_record(host, jobdir)
    if record is not None and record.version != pipe.version:
        raise PipelineError(
            f"{name_of(t)}: the job on {t.host} ran pipeline version {record.version}, the "
            f"current one is {pipe.version}; run again to resubmit"
        )
    provenance = _provenance(rt, t, record, archive)
    receipt = xnat.upload_files(
        rt.xnat,
        t.experiment,
        pipe.resource,
        [(archive, transfers.HostByteSource(host, jobdir.root))],
        provenance=provenance,
        version=pipe.version,
        on_exists="fail" if found is xnat.ResourceState.MISSING else "replace",
    )
    if record is not None:
        _update(host, jobdir, record, state=UPLOADED)
    modified = xnat.get_experiment(rt.xnat, t.experiment).last_modified
    rt.ledger.record_done(t.project, t.pipeline, t.experiment, modified, pipe.version)
    log.info("%s: uploaded to %s", name_of(t), receipt.uri)
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
    jobdir = jobdir_of(rt, t)
    if rt.settings.keep_workdir:
        log.info("%s: keeping %s on %s (keep_workdir)", name_of(t), jobdir.root, t.host)
        return False
    record = _read_record(host, jobdir)
    if record is not None and is_live(record.state):
        raise PipelineError(
            f"{name_of(t)}: job {record.job_id} is still {record.state.lower()}; not removing "
            f"{jobdir.root}"
        )
    _remove(host, jobdir)
    log.info("%s: removed %s on %s", name_of(t), jobdir.root, t.host)
    return True
