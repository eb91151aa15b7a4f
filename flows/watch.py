"""``watch_xnat``: start a pass (the ``on-new-session`` deployment of ``reconcile``) once for every
session that arrived since the last look: it stages and submits the session at once; the
interval ``reconcile`` passes collect its result.

Why ``run_deployment`` with an idempotency key rather than events and a deployment trigger:
exactly-once must survive a crash between "started the run" and "saved the mark", two watchers
overlapping, and a lost mark. With events, each of those emits the event again and the trigger
starts a second run: automations do not de-duplicate. ``run_deployment(...,
idempotency_key=<server|project|pipeline|experiment>)`` makes the Prefect server itself return the
existing run for a repeated key, so a replay is harmless and the mark
(:mod:`tasks.watch`: newest ``insert_date`` plus the IDs seen near it, in a Prefect Variable) is
only an optimisation. The started runs are independent deployment runs (not subflows), so a
failed experiment never fails the watcher, and a worker on the ``x2c-process`` pool runs them.
The ``on-new-session`` deployment also has an event trigger, for sites whose XNAT can post
events to Prefect; the watcher does not emit events.
"""

from __future__ import annotations

from prefect import flow

from tasks.report import artifact_key
from tasks.runtime import open_runtime
from tasks.watch import (
    DEFAULT_LOOKBACK_S,
    list_sessions,
    load_mark,
    new_sessions,
    save_mark,
    start_run,
    variable_name,
)
from x2c.provenance import public_url
from x2c.xnat import Experiment

ON_NEW_SESSION = "x2c-reconcile/on-new-session"


@flow(name="watch-xnat")
def watch_xnat(
    settings_path: str,
    deployment: str = ON_NEW_SESSION,
    lookback_s: float = DEFAULT_LOOKBACK_S,
    backfill: bool = False,
) -> list[str]:
    """For each ``projects`` entry of the settings, start ``deployment`` once per new session;
    return the ids of the flow runs started (or found already started). The first look only
    sets the mark unless ``backfill`` (the nightly run covers older sessions)."""
    from prefect.artifacts import create_table_artifact

    rt = open_runtime(settings_path)
    server = public_url(rt.xnat_config.url)
    listings: dict[str, list[Experiment]] = {}
    rows: list[dict[str, str]] = []
    started: list[str] = []
    for run in rt.settings.projects:
        if run.project not in listings:
            listings[run.project] = list_sessions(rt, run.project)
        name = variable_name(server, run.project, run.pipeline)
        fresh, mark = new_sessions(
            listings[run.project], load_mark(name), lookback_s=lookback_s, backfill=backfill
        )
        for e in fresh:
            run_id = start_run(
                deployment,
                server,
                settings_path,
                run.project,
                e.id,
                e.label,
                run.pipeline,
                run.host,
            )
            started.append(run_id)
            rows.append(
                {
                    "experiment": f"{run.project}/{e.label}",
                    "inserted": e.insert_date,
                    "pipeline": run.pipeline,
                    "host": run.host,
                    "flow run": run_id,
                }
            )
        if mark is not None:
            save_mark(name, mark)
    create_table_artifact(
        key=artifact_key("x2c-watch"),
        table=rows
        or [{"experiment": "", "inserted": "", "pipeline": "", "host": "", "flow run": ""}],
        description=f"{len(rows)} new session(s) handed on",
    )
    return started
