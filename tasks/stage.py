"""Stage the selected inputs X -> Y, streamed through this machine and verified per file."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.common import RETRIES, RETRY_DELAYS_S, retry_transient, run_logger
from x2c import recipe
from x2c.recipe import Runtime, Target
from x2c.xnat import SelectedInputs


@dataclass(frozen=True)
class Staged:
    """What staging did: files copied and already in place, bytes moved, seconds taken."""

    copied: int
    skipped: int
    bytes_copied: int
    seconds: float


@task(
    name="stage",
    task_run_name="stage-{t.label}",
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAYS_S,
    retry_condition_fn=retry_transient,
    cache_policy=NO_CACHE,
)
def stage_inputs(rt: Runtime, t: Target, selection: SelectedInputs) -> Staged:
    """Copy the inputs into the job directory on the host; files already right are kept."""
    report = recipe.stage(rt, t, selection)
    run_logger().info(
        "%s: staged %d file(s) (%.1f MB) to %s on %s in %.1f s; %d already there",
        t.label,
        report.copied,
        report.bytes_copied / 1e6,
        report.dest_dir,
        t.host,
        report.seconds,
        report.skipped,
    )
    return Staged(report.copied, report.skipped, report.bytes_copied, report.seconds)
