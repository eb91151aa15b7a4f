"""Reconcile: what one experiment needs now (skip, re-attach, collect, or submit)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import RETRIES, RETRY_DELAYS_S, retry_transient, run_logger
from x2c import recipe
from x2c.recipe import Decision, Runtime, Target


@task(
    name="decide",
    task_run_name="decide-{t.label}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def decide(rt: Runtime, t: Target, retry_failed: bool = False) -> Decision:
    """Compare XNAT and the job registry on the host, and say which steps are left; a job that
    failed before raises JobFailedError again unless ``retry_failed`` or its inputs changed."""
    decision = recipe.decide(rt, t, retry_failed=retry_failed)
    run_logger().info(
        "%s: %s (%s)", t.label, decision.action.name.lower().replace("_", " "), decision.reason
    )
    return decision
