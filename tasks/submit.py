"""Claim free places on the hosts, then launch each claimed experiment: select its inputs,
stage them X -> Y (verified), build the job script and submit it, exactly once."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import run_logger
from x2c import reconcile
from x2c.recipe import Runtime, Target
from x2c.reconcile import Row, Survey


@task(name="claim-places", task_run_name="claim-places", cache_policy=NO_CACHE)
def claim_places(rt: Runtime, s: Survey) -> tuple[list[Target], list[Row]]:
    """Claim the survey's chosen experiments on Y (one command per host, under its lock)."""
    granted, denied = reconcile.claim_places(rt, s)
    run_logger().info("%d place(s) claimed, %d taken by another run", len(granted), len(denied))
    return granted, denied


@task(name="submit", task_run_name="submit-{t.label}", cache_policy=NO_CACHE)
def submit_experiment(rt: Runtime, t: Target) -> Row:
    """Select, stage, build and submit one claimed experiment."""
    row = reconcile.launch(rt, t)
    run_logger().info("%s: %s (%s)", t.label, row.state, row.reason)
    return row
