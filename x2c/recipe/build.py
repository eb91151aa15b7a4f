"""Step 3, build: the job script and the spec the scheduler gets."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from x2c import jobdir as jd
from x2c import xnat
from x2c.errors import PipelineError
from x2c.jobenv import job_env_names
from x2c.jobscript import find_resume, render_job_script, xnat_forbidden
from x2c.poller import is_live
from x2c.recipe import registry
from x2c.recipe.handle import Handle, x2c_version
from x2c.schedulers import JobSpec
from x2c.schedulers.base import job_name

log = logging.getLogger(__name__)


def render_script(h: Handle, inputs: Sequence[str]) -> str:
    """The job script of ``h`` for these staged ``inputs`` (the password never in it)."""
    return render_job_script(
        h.pipe,
        job_dir=h.jobdir.root,
        subject=h.t.subject,
        experiment=h.t.label,
        inputs=inputs,
        runtime=h.cfg.container_runtime,
        project=h.t.project,
        resume=find_resume(h.pipe, inputs),
        path_prepend=h.cfg.path_prepend,
        forbidden=xnat_forbidden(h.rt.xnat_config),
        x2c_version=x2c_version(),
    )


def job_spec(h: Handle, tag: str, request: jd.Request | None = None) -> JobSpec:
    """What the scheduler needs to run ``h``'s script: resources, tag, the env names."""
    pipe = h.pipe
    return JobSpec(
        name=job_name(f"x2c-{pipe.name}-{h.t.label}", 64),
        script_path=h.jobdir.script,
        workdir=h.jobdir.root,
        stdout_path=h.jobdir.scheduler_log,
        exit_marker=h.jobdir.exit_code,
        tag=tag,
        cpus=pipe.cpus,
        mem_mb=request.mem_mb if request else pipe.mem_mb,
        walltime_s=request.walltime_s if request else pipe.walltime_seconds,
        env=job_env_names(pipe.passenv),
    )


def build(h: Handle, selection: xnat.SelectedInputs) -> JobSpec:
    """Render the job script into the job directory on Y (with the inputs manifest beside it),
    remove a stale exit marker and archive, and return the JobSpec to submit. The spec's tag
    is new for every build, so ``find(tag)`` can only ever find this build's job. Refuses
    while the registry says a job is queued or running in that directory (it would pull the
    script and the exit marker from under it)."""
    host, jobdir = h.host, h.jobdir
    current = registry.read(h)
    if current is not None and current.job_id and is_live(current.state):
        raise PipelineError(
            f"{h.name}: job {current.job_id} is {current.state.lower()} in {jobdir.root} on "
            f"{h.t.host}; attach to it (decide says ATTACH) instead of building a new one"
        )
    script = render_script(h, [f.path for f in selection.files])
    host.makedirs(jobdir.root)
    registry.write_inputs(h, selection.files)
    host.write_atomic(jobdir.script, script.encode())
    for stale in (jobdir.exit_code, jobdir.archive(h.pipe.archive_name)):
        host.remove(stale)
    nonce = secrets.token_hex(4)
    tag = f"x2c.{jd.safe_component(h.pipe.name)}.{jd.safe_component(h.t.experiment)}.{nonce}"
    log.info("%s: wrote %s", h.name, jobdir.script)
    # an escalated attempt (x2c.escalation) asks for what the survey decided
    return job_spec(h, tag, current.escalate_to if current is not None else None)
