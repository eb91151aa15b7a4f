"""Claim free places on the hosts, then launch each claimed experiment: select its inputs,
stage them X -> Y (verified), build the job script and submit it, exactly once; on a SLURM
host, the pass's experiments of one pipeline are staged first and submitted as ONE array."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import run_logger
from x2c import reconcile
from x2c.recipe import Runtime, Target
from x2c.reconcile import Prepared, Row, Survey


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


@task(name="stage", task_run_name="stage-{t.label}", cache_policy=NO_CACHE)
def stage_experiment(rt: Runtime, t: Target) -> Prepared | Row:
    """Select, stage and build one claimed experiment whose job goes into an array."""
    got = reconcile.prepare(rt, t)
    if isinstance(got, Row):
        run_logger().info("%s: %s (%s)", t.label, got.state, got.reason)
    return got


@task(name="submit-array", task_run_name="submit-array-{name}", cache_policy=NO_CACHE)
def submit_array(rt: Runtime, name: str, group: list[Prepared]) -> list[Row]:
    """Submit staged experiments of one host and pipeline as ONE job array (``sbatch
    --array``); ``name`` says which (host, pipeline, size) in the Prefect UI."""
    rows = reconcile.submit_group(rt, group)
    for row in rows:
        run_logger().info("%s: %s (%s)", row.label, row.state, row.reason)
    return rows
