"""``process_experiments``: the fan-out over a list of experiments, or a whole project.

Each experiment is one ``process-experiment`` flow run (named ``<project>-<label>``), started
from a thread of a bounded :class:`~prefect.task_runners.ThreadPoolTaskRunner`. The limits are
NOT the thread count: every experiment run takes a slot of the global concurrency limit
``x2c-host-<host>`` for as long as it is in flight and a slot of ``x2c-xnat`` around each XNAT
transfer (see :mod:`tasks.limits`), so they hold across every flow run on the server (a nightly
run, the watcher's runs and a manual batch share them), and leases give a crashed process's
slots back. A waiting thread costs nothing but a blocked slot request.

One experiment's failure never stops the others: every child's final state is read, never
raised. The batch ends Failed when any experiment failed, with a table of every experiment and
a markdown summary naming the failures, why, and their job logs' tails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.futures import as_completed
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.experiment import process_experiment
from tasks.limits import ensure_limits, wanted_limits
from tasks.report import (
    FAILED,
    ExperimentResult,
    artifact_key,
    publish_results,
    report_progress,
    start_progress,
)
from tasks.runtime import open_runtime
from tasks.targets import list_targets
from x2c.recipe import Target

# Threads that drive experiment runs at once in one batch. Most of them sit in a slot request
# or in the host poller's wait; the per-host and XNAT limits are what bound the work.
MAX_WORKERS = 32


class ExperimentFailed(Exception):
    """Ends an ``experiment-<label>`` task Failed, carrying the experiment's result (args[0])
    so the batch still reports its reason and log tail."""


@task(name="experiment", task_run_name="experiment-{t.label}", cache_policy=NO_CACHE)
def run_experiment(
    settings_path: str, t: Target, retry_failed: bool = False, wait_timeout_s: float | None = None
) -> ExperimentResult:
    """Run ``process_experiment`` for ``t`` and return its result; a failed experiment raises
    :class:`ExperimentFailed`, so this task ends Failed and the batch's graph shows it red."""
    state = process_experiment(
        settings_path=settings_path,
        project=t.project,
        experiment=t.experiment,
        pipeline=t.pipeline,
        host=t.host,
        label=t.label,
        subject=t.subject,
        last_modified=t.last_modified,
        retry_failed=retry_failed,
        wait_timeout_s=wait_timeout_s,
        return_state=True,
    )
    result = result_of(state, t)
    if result.failed:
        raise ExperimentFailed(result)
    return result


def result_of(state: State[Any], t: Target, data: Any = None) -> ExperimentResult:
    """The :class:`ExperimentResult` a run left (``data``, else its state's result), also when
    it failed (carried by :class:`ExperimentFailed`) or crashed without one."""
    if data is None:
        data = state.result(raise_on_failure=False)
    if isinstance(data, ExperimentFailed):
        data = data.args[0]
    if isinstance(data, ExperimentResult):
        return data
    reason = f"{type(data).__name__}: {data}" if isinstance(data, BaseException) else ""
    return ExperimentResult(
        project=t.project,
        experiment=t.experiment,
        label=t.label,
        pipeline=t.pipeline,
        host=t.host,
        state=FAILED,
        reason=reason or state.message or f"run ended {state.type.value}",
    )


def fan_out(
    settings_path: str,
    targets: Sequence[Target],
    *,
    title: str,
    key: str,
    retry_failed: bool = False,
    wait_timeout_s: float | None = None,
) -> list[ExperimentResult] | State[Any]:
    """Process ``targets`` concurrently under the limits; publish progress, the table and the
    summary; Failed when any failed. Called by the batch and nightly flows."""
    rt = open_runtime(settings_path)
    ensure_limits(wanted_limits(rt.settings))  # missing ones only; the server's values win
    progress = start_progress(len(targets), title)
    futures = [
        run_experiment.submit(settings_path, t, retry_failed, wait_timeout_s) for t in targets
    ]
    by_future = dict(zip((f.task_run_id for f in futures), targets, strict=True))
    results: dict[str, ExperimentResult] = {}
    for done, future in enumerate(as_completed(futures), start=1):
        t = by_future[future.task_run_id]
        data = future.result(raise_on_failure=False)
        results[t.experiment] = result_of(future.state, t, data)
        report_progress(progress, done, len(targets), title)
    ordered = [results[t.experiment] for t in targets]
    publish_results(key, title, ordered)
    failed = [r for r in ordered if r.failed]
    if failed:
        names = ", ".join(f"{r.project}/{r.label}" for r in failed[:10])
        more = f" and {len(failed) - 10} more" if len(failed) > 10 else ""
        return Failed(
            message=f"{len(failed)} of {len(ordered)} experiment(s) failed: {names}{more}",
            data=ordered,
        )
    return ordered


@flow(
    name="process-experiments",
    flow_run_name="{project}-{pipeline}-batch",
    task_runner=ThreadPoolTaskRunner(max_workers=MAX_WORKERS),  # type: ignore[arg-type]
)
def process_experiments(
    settings_path: str,
    project: str,
    pipeline: str,
    host: str,
    experiments: list[str] | None = None,
    retry_failed: bool = False,
    wait_timeout_s: float | None = None,
) -> list[ExperimentResult] | State[Any]:
    """Process the named ``experiments`` of ``project`` (IDs or labels; all of the project when
    None) with ``pipeline`` on ``host``, under the per-host and XNAT limits."""
    rt = open_runtime(settings_path)
    targets = list_targets(rt, project, pipeline, host, experiments)
    return fan_out(
        settings_path,
        targets,
        title=f"{pipeline} on {host} for {project}",
        key=artifact_key("x2c-batch", project, pipeline),
        retry_failed=retry_failed,
        wait_timeout_s=wait_timeout_s,
    )
