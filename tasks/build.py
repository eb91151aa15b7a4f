"""Build the job: render the pipeline's script into the job directory on the host."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import RETRIES, RETRY_DELAYS_S, retry_transient, run_logger
from x2c import recipe
from x2c.recipe import Runtime, Target
from x2c.schedulers import JobSpec
from x2c.xnat import SelectedInputs


@task(
    name="build",
    task_run_name="build-{t.label}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def build_job(rt: Runtime, t: Target, selection: SelectedInputs) -> JobSpec:
    """Write the job script; returns what the scheduler needs to run it."""
    spec = recipe.build(rt, t, selection)
    run_logger().info("%s: job script written to %s on %s", t.label, spec.script_path, t.host)
    return spec
