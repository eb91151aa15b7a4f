"""Select the inputs a pipeline declares on one experiment (XNAT listings only)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import RETRIES, RETRY_DELAYS_S, retry_transient, run_logger
from x2c import recipe
from x2c.recipe import Runtime, Target
from x2c.xnat import SelectedInputs


@task(
    name="select",
    task_run_name="select-{t.label}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def select_inputs(rt: Runtime, t: Target) -> SelectedInputs:
    """The files to stage; raises NothingToProcessError (not retried) when none match."""
    selection = recipe.select(rt, t)
    run_logger().info(
        "%s: %d file(s) selected from scan(s) %s (%.1f MB)",
        t.label,
        len(selection.files),
        ", ".join(s.id for s in selection.scans) or "-",
        selection.total_size / 1e6,
    )
    return selection
