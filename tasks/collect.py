"""Collect: find the job's archive on the host and check it against what the job recorded."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import RETRIES, RETRY_DELAYS_S, retry_transient, run_logger
from x2c import recipe
from x2c.recipe import Runtime, Target
from x2c.sources import FileRef


@task(
    name="collect",
    task_run_name="collect-{t.label}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def collect_result(rt: Runtime, t: Target) -> FileRef:
    """The archive on the host, described (size, md5) and verified."""
    archive = recipe.collect(rt, t)
    run_logger().info(
        "%s: result archive %s (%.1f MB) is ready on %s",
        t.label,
        archive.path,
        archive.size / 1e6,
        t.host,
    )
    return archive
