"""Submit the job to the host's scheduler, exactly once per experiment (registry + find)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import RETRIES, RETRY_DELAYS_S, retry_transient, run_logger
from x2c import recipe
from x2c.recipe import Runtime, Target
from x2c.schedulers import JobId, JobSpec


@task(
    name="submit",
    task_run_name="submit-{t.label}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def submit_job(rt: Runtime, t: Target, spec: JobSpec) -> JobId:
    """Hand the script to the scheduler; a retry after a lost connection finds the job the
    first attempt made instead of submitting another (the registry's "submitting" entry)."""
    job_id = recipe.submit(rt, t, spec)
    run_logger().info("%s: submitted as job %s on %s", t.label, job_id, t.host)
    return job_id
