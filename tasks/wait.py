"""Wait for the job through the host's shared poller (one scheduler call per interval for all
the jobs on the host, however many experiments wait)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import RETRIES, RETRY_DELAYS_S, retry_transient, run_logger
from x2c import recipe
from x2c.poller import JobOutcome
from x2c.recipe import Runtime, Target
from x2c.schedulers import JobId


@task(
    name="wait",
    task_run_name="wait-{t.label}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def wait_job(rt: Runtime, t: Target, job_id: JobId, timeout_s: float | None = None) -> JobOutcome:
    """Block until the job ends; JobFailedError (never retried) carries the reason and the log
    tail. No task timeout: a queued job can legitimately wait for days; ``timeout_s`` bounds it
    when the caller wants that."""
    run_logger().info("%s: waiting for job %s on %s", t.label, job_id, t.host)
    outcome = recipe.wait(rt, t, job_id, timeout=timeout_s)
    run_logger().info(
        "%s: job %s ended %s (exit %s)", t.label, job_id, outcome.state.value, outcome.exit_code
    )
    return outcome
