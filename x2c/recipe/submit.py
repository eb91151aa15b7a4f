"""Step 4, submit: hand the built job to the scheduler once, recorded before and after."""

from __future__ import annotations

import logging
import posixpath
import secrets
import shlex
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from x2c import jobdir as jd
from x2c.errors import PipelineError, RemoteCommandError
from x2c.poller import SUBMITTING, is_live
from x2c.recipe import registry
from x2c.recipe.handle import Handle
from x2c.schedulers import JobId, JobSpec, JobState
from x2c.schedulers.base import job_name
from x2c.schedulers.slurm import array_task

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


# --- SLURM job arrays -----------------------------------------------------------------------

ARRAYS = ".x2c-arrays"
"""Under a host's workdir: one directory per array job (``<tag>/``) holding its script, its
index (line ``i+1``: the job directory of task ``i``) and, for each task, ``<i>.log``: a link
to that job directory's scheduler log, where SLURM writes the task's output. A leading dot:
the claim scans (``*/*/inflight``) never see it."""

ARRAY_SCRIPT = "array.sh"
ARRAY_INDEX = "index"

# $1 the array's directory, then the job directories in task order: the index and the links
_LAYOUT = r"""d=$1; shift
mkdir -p -- "$d" && : >"$d/index.tmp" || exit 66
i=0
for j; do
  printf '%s\n' "$j" >>"$d/index.tmp" && ln -sfn -- "$j/scheduler.log" "$d/$i.log" || exit 67
  i=$((i+1))
done
mv -f -- "$d/index.tmp" "$d/index"
"""

# $1 the array's directory, $2 the task's index: unlink its log; the last one out removes it
_UNLINK = r"""rm -f -- "$1/$2.log"
for f in "$1"/*.log; do [ -L "$f" ] && exit 0; done
rm -rf -- "$1"
"""


def array_tag(pipeline: str) -> str:
    """A new tag for an array of ``pipeline``'s jobs (the array's SLURM comment)."""
    return f"x2c.array.{jd.safe_component(pipeline)}.{secrets.token_hex(4)}"


def array_dir(workdir: str, tag: str) -> str:
    """Where the array tagged ``tag`` keeps its script and index on the host."""
    return posixpath.join(workdir, ARRAYS, tag)


def array_script(index: str) -> str:
    """The array's script: task ``i`` runs the job script of line ``i+1`` of ``index``, in its
    own job directory, exactly as a single job would (same exit marker, log and run.env)."""
    q = shlex.quote(index)
    return "\n".join(
        [
            "#!/usr/bin/env bash",
            "# x2c job array: task i runs the job script of the job directory on line i+1 of",
            f"# {index}. Do not edit.",
            "set -euo pipefail",
            f'x2c_dir=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" -- {q})',
            '[ -n "$x2c_dir" ] || { echo "x2c: no line $((SLURM_ARRAY_TASK_ID + 1)) in" '
            f"{q} >&2; exit 64; }}",
            'cd -- "$x2c_dir"',
            f"exec bash -- {shlex.quote(jd.JOB_SCRIPT)}",
            "",
        ]
    )


def submit_array(
    pairs: Sequence[tuple[Handle, JobSpec]], tag: str, throttle: int = 0
) -> list[JobId]:
    """Submit the built jobs ``pairs`` (one host, one pipeline, the same resources; the caller
    holds their claims) as ONE array job tagged ``tag``: every member's registry entry says
    ``submitting`` with its task's tag (``<tag>@<i>``: a crash from here on is resolved by
    ``find``, as for a single job), then one ``sbatch --array``, then each entry gets its job
    id ``<array id>_<i>``. Returns the ids in the order of ``pairs``."""
    h0, spec0 = pairs[0]
    if any("\n" in h.jobdir.root for h, _ in pairs):
        raise PipelineError(f"{h0.name}: a job directory with a newline cannot go in an index")
    root = array_dir(h0.cfg.workdir, tag)
    index = posixpath.join(root, ARRAY_INDEX)
    argv = ["sh", "-c", _LAYOUT, "x2c-array", root, *(h.jobdir.root for h, _ in pairs)]
    done = h0.host.runner.run(argv)
    if done.returncode != 0:
        raise RemoteCommandError(
            f"writing the index of array {tag} under {root} on {h0.t.host} failed "
            f"(exit {done.returncode}): {done.stderr.strip()}; check the workdir is writable",
            host=h0.t.host,
            argv=argv[:5],
            returncode=done.returncode,
            stderr=done.stderr,
        )
    script = posixpath.join(root, ARRAY_SCRIPT)
    h0.host.write_atomic(script, array_script(index).encode())
    records = []
    for i, (h, spec) in enumerate(pairs):
        record = submitting(h, replace(spec, tag=array_task(tag, i)))
        registry.write(h, record)
        records.append(record)
    array = replace(
        spec0,
        name=job_name(f"x2c-{h0.pipe.name}-array", 64),
        script_path=script,
        workdir=root,
        stdout_path=posixpath.join(root, "%a.log"),
        exit_marker="",
        tag=tag,
        array=len(pairs),
        array_throttle=throttle,
    )
    job = h0.scheduler.submit(array)
    ids = [JobId(f"{job}_{i}") for i in range(len(pairs))]
    for (h, _), record, job_id in zip(pairs, records, ids, strict=True):
        registry.update(h, record, job_id=job_id, state=JobState.PENDING.value)
    log.info(
        "%s and %d more: submitted as array job %s on %s", h0.name, len(pairs) - 1, job, h0.t.host
    )
    return ids


def leave_array(h: Handle, tag: str) -> None:
    """After ``h``'s task of an array is done with: unlink its log from the array's directory,
    which goes with its last task."""
    base, at, index = tag.partition("@")
    if at and index.isdigit():
        h.host.runner.run(
            ["sh", "-c", _UNLINK, "x2c-array-done", array_dir(h.cfg.workdir, base), index]
        )
