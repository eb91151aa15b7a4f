"""Finish a completed job: collect its archive on the host, upload it to XNAT with its
provenance (verified by listing it back), then clean the job directory."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import run_logger
from x2c import reconcile
from x2c.recipe import Runtime, Target
from x2c.reconcile import Row


@task(name="upload", task_run_name="upload-{t.label}", cache_policy=NO_CACHE)
def upload_result(rt: Runtime, t: Target) -> Row:
    """Collect, upload and clean one completed job (under its finishing claim)."""
    row = reconcile.finish(rt, t)
    run_logger().info("%s: %s (%s)", t.label, row.state, row.reason)
    return row
