"""List the experiments to work on: named ones, a whole project, or the nightly's pending ones.
Each is one listing request (plus a status check only for experiments the ledger does not know
as done)."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import RETRIES, RETRY_DELAYS_S, retry_transient, run_logger
from x2c import recipe
from x2c.recipe import Runtime, Target


@task(
    name="targets",
    task_run_name="targets-{project}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def list_targets(
    rt: Runtime,
    project: str,
    pipeline: str,
    host: str,
    experiments: Sequence[str] | None = None,
) -> list[Target]:
    """The experiments of ``project`` (all, or those named by ID or label)."""
    found = recipe.targets(rt, project, pipeline, host, experiments)
    run_logger().info("%s: %d experiment(s) to consider for %s", project, len(found), pipeline)
    return found


@task(
    name="pending",
    task_run_name="pending-{project}-{pipeline}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def pending_targets(rt: Runtime, project: str, pipeline: str, host: str) -> list[Target]:
    """The experiments of ``project`` whose ``pipeline`` result is not done yet."""
    todo = recipe.pending(rt, project, pipeline, host)
    run_logger().info("%s: %d experiment(s) not done for %s", project, len(todo), pipeline)
    return todo
