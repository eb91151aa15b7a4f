"""Upload the result to XNAT with its provenance, verified by listing it back; then clean the
job directory on the host (unless the settings keep it)."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import RETRIES, RETRY_DELAYS_S, retry_transient, run_logger
from x2c import recipe
from x2c.poller import JobOutcome
from x2c.recipe import Runtime, Target
from x2c.sources import FileRef


@dataclass(frozen=True)
class Uploaded:
    """Where the result is on XNAT: the resource's URI, its label and the pipeline version."""

    uri: str
    resource: str
    version: str
    files: int


@task(
    name="upload",
    task_run_name="upload-{t.label}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def upload_result(rt: Runtime, t: Target, archive: FileRef, outcome: JobOutcome | None) -> Uploaded:
    """Stream the archive host -> XNAT with provenance (replacing an outdated result)."""
    receipt = recipe.upload(rt, t, archive, outcome)
    run_logger().info(
        "%s: result uploaded and verified at %s (%d file(s) + provenance)",
        t.label,
        receipt.uri,
        len(receipt.files),
    )
    return Uploaded(receipt.uri, receipt.resource, receipt.version, len(receipt.files))


@task(
    name="clean",
    task_run_name="clean-{t.label}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def clean_workdir(rt: Runtime, t: Target) -> None:
    """Remove the experiment's job directory on the host (a no-op when ``keep_workdir``)."""
    if recipe.clean(rt, t):
        run_logger().info("%s: work directory on %s cleaned", t.label, t.host)
    else:
        run_logger().info("%s: work directory on %s kept (keep_workdir)", t.label, t.host)
