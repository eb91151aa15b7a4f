"""The dry run: every request, transfer and command a run WOULD make for one experiment, and
the job script it would submit, as lines of text. It reads (XNAT listings, files on Y) and
changes nothing; it never polls (a poll of the local scheduler starts jobs) and never shows a
password. The seed form's ``--dry-run`` prints it."""

from __future__ import annotations

import enum
import shlex
from dataclasses import dataclass

from x2c import jobdir as jd
from x2c import xnat
from x2c.errors import JobFailedError, NothingToProcessError
from x2c.poller import SUBMITTING, is_live, is_success
from x2c.provenance import public_url
from x2c.recipe import Handle, Runtime, Target, handle, job_spec, registry, render_script
from x2c.schedulers import JobId, JobSpec
from x2c.schedulers.slurm import sbatch_argv


class Action(enum.Enum):
    """What the dry run (:func:`plan`) found to be the next step for a target."""

    SKIP_DONE = "skip_done"
    """The verified result of this pipeline version is on XNAT."""
    ATTACH = "attach"
    """A job is queued or running: a pass polls it, never submits again."""
    COLLECT = "collect"
    """The job finished and its archive is on Y: collect and upload."""
    SUBMIT = "submit"
    """Nothing usable exists: select, stage, build and submit."""


@dataclass(frozen=True)
class Decision:
    """What :func:`plan` decided: the ``action``, why (a user's sentence), and the job it
    concerns (ATTACH and COLLECT)."""

    action: Action
    reason: str
    job_id: JobId | None = None


def _assess(h: Handle) -> Decision:
    """Where ``h`` stands, read-only (the dry run never polls: a poll of the local scheduler
    launches jobs); raises :class:`JobFailedError` for a failure that would be reported."""
    t, pipe = h.t, h.pipe
    status = xnat.resource_status(h.rt.xnat, t.experiment, pipe.resource, pipe.version)
    if status.done:
        return Decision(Action.SKIP_DONE, status.reason)
    record = registry.read(h)
    if record is not None and record.state == SUBMITTING:
        record = registry.resolve_submitting(h, record)
    if record is None:
        return Decision(Action.SUBMIT, f"{status.reason}; no job recorded on {t.host}")
    if is_live(record.state):
        return Decision(
            Action.ATTACH,
            f"job {record.job_id} was last recorded as {record.state.lower()}",
            JobId(record.job_id),
        )
    if record.version != pipe.version:
        return Decision(
            Action.SUBMIT, f"the job on {t.host} ran version {record.version}, not {pipe.version}"
        )
    if is_success(record.state):
        if h.host.exists(h.jobdir.archive(pipe.archive_name)):
            return Decision(
                Action.COLLECT,
                f"job {record.job_id} finished and its archive is on {t.host}; {status.reason}",
                JobId(record.job_id),
            )
        return Decision(Action.SUBMIT, f"job {record.job_id} finished but its archive is gone")
    registry.check_failed(h)
    return Decision(Action.SUBMIT, f"the inputs changed since job {record.job_id} failed")


def _submit_line(h: Handle, spec: JobSpec) -> str:
    cfg = h.cfg
    if cfg.scheduler.kind == "slurm":
        line = "submit: " + shlex.join(sbatch_argv(spec, cfg.scheduler))
        if cfg.scheduler.arrays:
            line += " (alone; a pass launching several experiments here submits them as one "
            line += "sbatch --array, see x2c.recipe.submit)"
        return line
    return (
        f"submit: {cfg.scheduler.kind} job {spec.name} running bash {shlex.quote(spec.script_path)}"
    )


def plan(rt: Runtime, t: Target) -> list[str]:
    """The dry run of ``t``: every request, transfer and command it WOULD make, and the job
    script it would submit, as lines of text. Changes nothing (read-only XNAT requests and
    file reads on Y only); never shows a password."""
    h = handle(rt, t)
    pipe, cfg, jobdir = h.pipe, h.cfg, h.jobdir
    server = public_url(rt.xnat_config.url)
    where = f"{cfg.ssh or t.host}:{shlex.quote(jobdir.root)}"
    lines = [f"# {h.name} ({t.experiment}) on {t.host}, pipeline version {pipe.version}"]
    try:
        decision = _assess(h)
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
        script = render_script(h, [f.path for f in selection.files])
        spec = job_spec(h, f"x2c.{pipe.name}.{t.experiment}.<new>")
        lines.append(f"write: {where}/{registry.INPUTS_MANIFEST} (the staged files, size and md5)")
        lines.append(f"write: {where}/{jd.JOB_SCRIPT}:")
        lines += [f"  | {line}" for line in script.splitlines()]
        lines.append(f"write: {where}/{jd.REGISTRY} (state submitting, with the job's tag)")
        lines.append(_submit_line(h, spec))
        lines.append(f"write: {where}/{jd.REGISTRY} (the job id, state PENDING)")
    if decision.action in (Action.SUBMIT, Action.ATTACH):
        lines.append(f"wait: poll {cfg.scheduler.kind} on {t.host} until the job ends")
    resource = f"{server}/data/experiments/{t.experiment}/resources/{pipe.resource}"
    lines += [
        f"collect: md5sum {where}/{pipe.archive_name}; compare with {jd.RUN_INFO}",
        f"upload: PUT {resource}/files/{pipe.archive_name} <- {where}/{pipe.archive_name} "
        "(creates the resource; a result already there is never overwritten: its status "
        "decides, a verified one is kept, a partial or outdated one deleted and replaced)",
        f"upload: PUT {resource}/files/provenance.json (the md5s as sent, the version)",
        f"verify (the next pass): GET {resource}/files (names, sizes and md5s against the "
        "provenance; records the experiment in the nightly ledger)",
        f"clean: {'keep' if rt.settings.keep_workdir else 'rm -rf'} {where}",
    ]
    return lines
