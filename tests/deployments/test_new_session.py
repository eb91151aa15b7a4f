"""The whole loop with a real ``prefect server start`` and a real process worker: a new session
appears on XNAT -> the watcher notices -> exactly one ``process-experiment`` run of the
``on-new-session`` deployment (from prefect.yaml) -> the worker runs it -> the result is on
XNAT."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

from flows.watch import watch_xnat
from tests.deployments.conftest import PrefectServer
from tests.fixtures.xnat_data import add_session, xnat_config
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import poll, write_settings
from x2c import recipe
from x2c.xnat import connect, resource_status

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker(
    prefect_server: PrefectServer, deployed: str, xnat_server: XnatServer, tmp_path: Path
) -> Iterator[Path]:
    """``prefect worker start`` on the x2c-process pool; the flow runs it starts get the XNAT
    password from the worker's environment, never from a parameter."""
    env = prefect_server.env()
    env.update(XNAT_PASS=xnat_server.password, PREFECT_WORKER_QUERY_SECONDS="1")
    log_path = tmp_path / "worker.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "x2c-process"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield log_path
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_a_new_session_is_processed_once_through_watcher_and_worker(
    prefect_server: PrefectServer,
    xnat_server: XnatServer,
    worker: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = xnat_server.new_project("E2E")
    add_session(xnat_server, project, "S0", "S0_MR1")
    settings = str(
        write_settings(tmp_path / "x2c.yaml", xnat_server, tmp_path, projects=[(project, "demo")])
    )
    monkeypatch.setenv("XNAT_PASS", xnat_server.password)
    try:
        with prefect_server.settings():
            assert watch_xnat(settings) == [], "the first look sets the mark"
            eid = add_session(xnat_server, project, "S1", "S1_MR1", index=2)
            [run_id] = watch_xnat(settings)
            assert watch_xnat(settings) == [], "seen again: nothing new"

            def finished() -> object:
                with get_client(sync_client=True) as client:
                    run = client.read_flow_run(run_id)
                return run if run.state and run.state.is_final() else None

            try:
                run = poll(finished, "the worker to finish the run", timeout=180)
            except AssertionError:
                raise AssertionError(worker.read_text(errors="replace")[-4000:]) from None
            assert run.state is not None and run.state.is_completed(), (
                f"{run.state}\n{worker.read_text(errors='replace')[-4000:]}"
            )
            assert run.name == f"{project}-S1_MR1"
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(
                        name=DeploymentFilterName(any_=["on-new-session"])
                    )
                )
            mine = [r for r in runs if r.parameters.get("project") == project]
            assert [r.id for r in mine] == [run.id], "exactly one run for the new session"
    finally:
        recipe.close_runtimes()

    with connect(xnat_config(xnat_server)) as session:
        status = resource_status(session, eid, "DEMO_STATS", "1.0.0")
    assert status.done, status.reason
    assert xnat_server.password not in repr(run.parameters)
