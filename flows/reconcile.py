"""``reconcile``: one pass over a scope (see :mod:`x2c.reconcile`); every deployment is one.

The pass is short whatever is in flight: it lists each project once, polls each host once,
finishes the jobs that completed (``upload-<label>`` tasks), claims the free places and
launches the oldest sessions into them (``submit-<label>`` tasks; on a SLURM host,
``stage-<label>`` tasks, then ONE ``submit-array-<host>-<pipeline>-<k>`` task whose
``sbatch --array`` submits them all), and returns. Jobs run on
the cluster between passes; no thread, flow run or concurrency slot waits for them.

Why tasks named ``<phase>-<label>`` and not a flow run per experiment: measured on this
machine, a task run costs ~7-18 ms of client time (its states travel as events), a nested flow
run several synchronous API calls (~0.15 s with the heartbeat off, 1.1 s with it). Two phases
per experiment (submit, upload) keep the orchestration cost per experiment well under the
recipe's own work (``bench/bench_flow_overhead.py``, no-op job, server on PostgreSQL on the
same 2 cores: +74 ms per experiment at N=100, +88 ms at N=1,000); the steps inside a phase
(select, stage, build, submit; collect, upload, clean) log to the task's run.

A pass never ends Failed because an experiment failed: its table artifact (``x2c-pass-...``)
and its result list every experiment with its state; the run's state message gives the
counts. An error of Prefect itself around one experiment's task (an API answer lost) leaves
that experiment ``pending`` for the next pass, never ``failed``: its truth is on Y and X.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from tasks.hooks import run_hooks
from tasks.report import artifact_key, counts, publish_history, publish_results
from tasks.runtime import open_runtime
from tasks.submit import claim_places, stage_experiment, submit_array, submit_experiment
from tasks.survey import survey_scope
from tasks.upload import upload_result
from x2c.errors import X2CError
from x2c.hooks import fires_hooks
from x2c.recipe import Target
from x2c.reconcile import (
    FAILED,
    PENDING,
    Prepared,
    Row,
    arrays_on,
    groups,
    holding,
    key_of,
    scope_of,
)

# Threads that run one pass's upload and submit tasks; XNAT transfers inside them are bounded
# by the settings' limits.xnat_transfers (Runtime.xnat_slot), host commands by the one SSH
# connection's channels. Jobs in flight hold none of them.
WORKERS = 8

T = TypeVar("T")


def _run_name() -> str:
    params: dict[str, Any] = flow_run.parameters
    parts = [params.get("project") or "all", params.get("pipeline"), params.get("host")]
    named = params.get("experiments") or []
    if len(named) == 1:
        parts.append(named[0])
    elif named:
        parts.append(f"{len(named)}-experiments")
    return "pass-" + "-".join(p for p in parts if p)


def _lost(t: Target, exc: Exception) -> Row:
    """The row of an experiment whose task raised: x2c's own error fails it for this pass; an
    error that is not x2c's (the Prefect API, a bug) leaves it pending for the next pass,
    which finds the truth on Y and X."""
    if isinstance(exc, X2CError):
        return Row.of(t, FAILED, f"{type(exc).__name__}: {exc}")
    return Row.of(
        t,
        PENDING,
        f"this pass lost track of it ({type(exc).__name__}: {exc}); the next pass picks it up",
    )


def _row_of(future: PrefectFuture[T], t: Target) -> T | Row:
    """The task's result, or :func:`_lost`'s row."""
    try:
        return future.result()
    except Exception as exc:
        return _lost(t, exc)


def _rows_of(future: PrefectFuture[list[Row]], group: list[Prepared]) -> list[Row]:
    """The array task's rows, or :func:`_lost`'s row for each of its experiments (their
    claims and registry entries tell the next pass what happened)."""
    try:
        return future.result()
    except Exception as exc:
        return [_lost(p.h.t, exc) for p in group]


def _group_name(group: list[Prepared]) -> str:
    h = group[0].h
    return f"{h.t.host}-{h.pipe.name}-{len(group)}"


def _hooked_row(future: PrefectFuture[Row], row: Row) -> Row:
    """The row after its hooks; an error around the hook task leaves the row as it was, with
    the error beside it (a hook never changes an experiment's state)."""
    try:
        return future.result()
    except Exception as exc:
        note = f"hooks not run ({type(exc).__name__}: {exc})"
        return replace(row, reason=f"{row.reason}; {note}" if row.reason else note)


@flow(
    name="x2c-reconcile",
    flow_run_name=_run_name,
    task_runner=ThreadPoolTaskRunner(max_workers=WORKERS),  # type: ignore[arg-type]
)
def reconcile(
    settings_path: str,
    project: str | None = None,
    pipeline: str | None = None,
    host: str | None = None,
    experiments: list[str] | None = None,
    retry_failed: bool = False,
) -> State[Any]:
    """One pass over the ``projects:`` entries of the settings (those of ``project``, or all;
    narrowed by ``pipeline``/``host``), or over ``project`` with ``pipeline`` and ``host``;
    ``experiments`` (IDs or labels) narrows it to those. ``retry_failed`` launches again the
    experiments whose job failed with unchanged inputs. Returns a Completed state whose data is
    one :class:`~x2c.reconcile.Row` per experiment."""
    rt = open_runtime(settings_path)
    scope = scope_of(rt.settings, project, pipeline, host, experiments)
    s = survey_scope(rt, scope, retry_failed)
    rows = dict(s.rows)
    uploads = [(t, upload_result.submit(rt, t)) for t in s.finish]
    for t, future in uploads:
        rows[key_of(t)] = _row_of(future, t)
    granted, denied = claim_places(rt, s)
    rows.update({key_of(r): r for r in denied})
    with holding(rt, granted):
        arrays_here = {name: arrays_on(rt, name) for name in {t.host for t in granted}}
        launches = [
            (t, submit_experiment.submit(rt, t)) for t in granted if not arrays_here[t.host]
        ]
        staging = [(t, stage_experiment.submit(rt, t)) for t in granted if arrays_here[t.host]]
        staged = [(t, _row_of(future, t)) for t, future in staging]
        rows.update((key_of(t), got) for t, got in staged if isinstance(got, Row))
        prepared = [got for _, got in staged if isinstance(got, Prepared)]
        arrays = [(g, submit_array.submit(rt, _group_name(g), g)) for g in groups(rt, prepared)]
        for t, future in launches:
            rows[key_of(t)] = _row_of(future, t)
        for group, future in arrays:
            rows.update((key_of(r), r) for r in _rows_of(future, group))
    ordered = [rows[key_of(t)] for t in s.targets if key_of(t) in rows]
    # the site's hooks for every experiment that ended in this pass (done or failed), on Z
    hooked = [(i, run_hooks.submit(rt, r)) for i, r in enumerate(ordered) if fires_hooks(rt, r)]
    for i, future in hooked:
        ordered[i] = _hooked_row(future, ordered[i])
    title = _run_name()
    publish_results(artifact_key("x2c", title), title, ordered)
    publish_history(ordered)
    return Completed(message=counts(ordered), data=ordered)
