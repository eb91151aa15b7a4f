"""The whole loop on the Prefect stack (a ``prefect server start`` on PostgreSQL and its process
workers): a new session appears on XNAT -> the watcher notices -> exactly one pass of the
``on-new-session`` deployment (from prefect.yaml) -> one of the pool's workers runs it and the
job is submitted at once -> a later pass (the ``reconcile`` deployment's work) collects it ->
the result is on XNAT.

Any worker of the pool may take the run, so the XNAT credential source is one every worker on
this machine can read: a pyxnat ``.cfg`` file (0600) named by the settings file, never a
parameter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

from flows.reconcile import reconcile
from flows.watch import watch_xnat
from tasks.watch import variable_name
from tests.deployments.conftest import Deployed, settings_with_cfg
from tests.fixtures.prefect_stack import PrefectStack
from tests.fixtures.xnat_data import add_session, xnat_config
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import poll
from x2c import recipe
from x2c.xnat import connect, resource_status


def one_pass(settings: str, project: str, host: str, eid: str) -> list[Any]:
    try:
        state = reconcile(
            settings_path=settings,
            project=project,
            pipeline="demo",
            host=host,
            experiments=[eid],
            return_state=True,
        )
        rows: list[Any] = state.result()
        return rows
    finally:
        recipe.close_runtimes()


def test_a_new_session_is_processed_once_through_watcher_and_worker(
    prefect_stack: PrefectStack, deployed: Deployed, xnat_server: XnatServer, tmp_path: Path
) -> None:
    project = xnat_server.new_project("E2E")
    add_session(xnat_server, project, "S0", "S0_MR1")
    host = f"local{project.lower()}"
    settings = settings_with_cfg(tmp_path, xnat_server, project, host)
    on_new_session = deployed.ids["on-new-session"]
    try:
        with prefect_stack.settings():
            assert watch_xnat(settings) == [], "the first look sets the mark"
            eid = add_session(xnat_server, project, "S1", "S1_MR1", index=2)
            [run_id] = watch_xnat(settings)
            assert watch_xnat(settings) == [], "seen again: nothing new"

            def finished() -> object:
                with get_client(sync_client=True) as client:
                    run = client.read_flow_run(run_id)
                return run if run.state and run.state.is_final() else None

            try:
                run = poll(finished, "a worker of the stack to finish the run", timeout=180)
            except AssertionError:
                raise AssertionError(prefect_stack.worker_logs()) from None
            assert run.state is not None and run.state.is_completed(), (
                f"{run.state}\n{prefect_stack.worker_logs()}"
            )
            assert run.name == f"pass-{project}-demo-{host}-{eid}"
            assert run.deployment_id == on_new_session
            assert run.work_pool_name == "x2c-process"
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id=FlowRunFilterDeploymentId(any_=[on_new_session])
                    )
                )
            mine = [r for r in runs if r.parameters.get("project") == project]
            assert [r.id for r in mine] == [run.id], "exactly one run for the new session"
    finally:
        recipe.close_runtimes()
        with prefect_stack.settings(), get_client(sync_client=True) as client:
            client.delete_variable_by_name(variable_name(xnat_server.url, project, "demo"))

    # the pass submitted the job and returned; passes (what the reconcile deployment runs every
    # few minutes) collect it
    with prefect_stack.settings():
        rows = poll(
            lambda: (
                (rs := one_pass(settings, project, host, eid)) and all(r.final for r in rs) and rs
            ),
            "a pass to collect the job",
            timeout=120,
        )
    assert [(r.state, r.action) for r in rows] == [("done", "collect")], rows
    with connect(xnat_config(xnat_server)) as session:
        status = resource_status(session, eid, "DEMO_STATS", "1.0.0")
    assert status.done, status.reason
    assert xnat_server.password not in repr(run.parameters)
