"""``nightly``: every configured (project, pipeline, host), reconciled toward "done".

Cheap when there is nothing to do: one listing request per project, and a status check only
for experiments the local ledger does not already know as done at their current
``last_modified`` and pipeline version (:func:`x2c.recipe.pending`). What is left goes through
one fan-out under the per-host and XNAT limits.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.batch import MAX_WORKERS, fan_out
from tasks.report import ExperimentResult
from tasks.runtime import open_runtime
from tasks.targets import pending_targets
from x2c.recipe import Target


@flow(
    name="x2c-nightly",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS),  # type: ignore[arg-type]
)
def nightly(settings_path: str) -> list[ExperimentResult] | State[Any]:
    """Process every experiment not yet done, for each ``projects`` entry of the settings."""
    rt = open_runtime(settings_path)
    todo: list[Target] = []
    for run in rt.settings.projects:
        todo += pending_targets(rt, run.project, run.pipeline, run.host)
    return fan_out(settings_path, todo, title="nightly reconcile", key="x2c-nightly")
