"""Step 7, upload: the archive from Y to XNAT as the result resource, provenance last; the
registry then says ``uploaded``, and the next pass verifies it (:func:`x2c.reconcile.finish`)."""

from __future__ import annotations

import logging
from typing import Any

from x2c import jobdir as jd
from x2c import transfers, xnat
from x2c.errors import PipelineError
from x2c.jobscript import effective_runtime, find_resume, job_argv
from x2c.poller import UPLOADED
from x2c.provenance import build_provenance
from x2c.recipe import registry
from x2c.recipe.handle import Handle, x2c_version
from x2c.schedulers import JobState
from x2c.sources import FileRef

log = logging.getLogger(__name__)


def provenance(h: Handle, record: jd.JobRecord | None, archive: FileRef) -> dict[str, Any]:
    """The provenance record of ``h``'s result (no credential in it)."""
    t, pipe = h.t, h.pipe
    inputs = registry.staged_inputs(h)
    paths = [f.path for f in inputs]
    runtime = effective_runtime(pipe, h.cfg.container_runtime)
    argv = job_argv(
        pipe,
        job_dir=h.jobdir.root,
        subject=t.subject,
        experiment=t.label,
        inputs=paths,
        runtime=runtime,
        project=t.project,
        resume=find_resume(pipe, paths),
    )
    return build_provenance(
        pipe,
        runtime=runtime,
        image_digest=h.rt.image_digest(t.host, pipe),
        argv=argv,
        inputs=inputs,
        scheduler=h.cfg.scheduler.kind,
        job_id=record.job_id if record else None,
        host=t.host,
        run=registry.run_info(h),
        x2c_version=x2c_version(),
        source_url=h.rt.xnat_config.url,
        project=t.project,
        subject=t.subject,
        experiment=t.label,
        archive=archive,
        attempts=attempts(record),
    )


def attempts(record: jd.JobRecord | None) -> list[dict[str, Any]]:
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
    h: Handle, archive: FileRef, *, found: xnat.ResourceState | None = None
) -> xnat.UploadReceipt:
    """Stream the archive from Y to XNAT as the pipeline's result resource (replacing a partial
    or outdated one: the caller checked it is not a verified result of this version and says
    what it ``found``: a resource found missing is created by the upload, and a result file
    put there meanwhile by another run is a conflict, never overwritten; anything else, or
    None, is replaced), with its provenance written last and recording the md5s as sent; then
    record ``uploaded`` in the registry. Two requests, no listing: the verification is the
    next pass's status check, which compares XNAT's listing with those md5s (and settles the
    ledger with the same request). The registry and ``run.env`` supply the job's facts."""
    t, pipe, rt = h.t, h.pipe, h.rt
    record = registry.read(h)
    if record is not None and record.version != pipe.version:
        raise PipelineError(
            f"{h.name}: the job on {t.host} ran pipeline version {record.version}, the "
            f"current one is {pipe.version}; run again to resubmit"
        )
    receipt = xnat.upload_files(
        rt.xnat,
        t.experiment,
        pipe.resource,
        [(archive, transfers.HostByteSource(h.host, h.jobdir.root))],
        provenance=provenance(h, record, archive),
        version=pipe.version,
        on_exists="fail" if found is xnat.ResourceState.MISSING else "replace",
        verify=False,
    )
    if record is not None:
        registry.update(h, record, state=UPLOADED, uploads=record.uploads + 1)
    log.info("%s: uploaded to %s (the next pass verifies it)", h.name, receipt.uri)
    return receipt
