"""The first phase of a pass: list each project once, read every claim on each host once and
poll each host's scheduler once for all of x2c's jobs there."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import run_logger
from x2c import reconcile
from x2c.recipe import Runtime
from x2c.reconcile import ScopeEntry, Survey


@task(name="survey", task_run_name="survey", cache_policy=NO_CACHE)
def survey_scope(rt: Runtime, scope: Sequence[ScopeEntry], retry_failed: bool = False) -> Survey:
    """Where every experiment of ``scope`` stands, with the jobs to finish and the experiments
    to launch (see :func:`x2c.reconcile.survey`)."""
    s = reconcile.survey(rt, scope, retry_failed=retry_failed)
    launch = sum(len(v) for v in s.launch.values())
    run_logger().info(
        "%d experiment(s) in scope; %d claimed on %s; %d to collect, %d to launch",
        len(s.targets),
        sum(s.claimed.values()),
        ", ".join(sorted(s.claimed)) or "no host",
        len(s.finish),
        launch,
    )
    return s
