"""``process_experiment`` end to end: devxnat + the local host + the local scheduler + the demo
pipeline, through the real Prefect engine (the session's test harness)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.experiment import process_experiment
from tasks.limits import ensure_limits, host_limit
from tasks.report import DONE, ExperimentResult
from tests.fixtures.xnat_data import add_session, xnat_config
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import artifacts_by_key, poll, recorded_text, write_settings
from x2c import recipe
from x2c.xnat import connect, resource_status


@pytest.fixture
def runtimes() -> Iterator[None]:
    yield
    recipe.close_runtimes()


def local_jobs(work: Path) -> list[Path]:
    """Every job the local scheduler ever queued under ``work`` (its own state directory)."""
    state = work / "work" / ".x2c-local"
    return sorted(d for d in state.iterdir() if (d / "tag").is_file()) if state.is_dir() else []


def non_admin_requests(server: XnatServer) -> int:
    counts = server.request_counts()
    return sum(n for key, n in counts.items() if not key.split(" ", 1)[1].startswith("/x2c"))


def test_one_experiment_end_to_end_then_a_rerun_only_checks(
    xnat_server: XnatServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runtimes: None,
) -> None:
    project = xnat_server.new_project("FLW")
    eid = add_session(xnat_server, project, "S1", "S1_MR1", index=1)
    settings = write_settings(tmp_path / "x2c.yaml", xnat_server, tmp_path)
    monkeypatch.setenv("XNAT_PASS", xnat_server.password)
    ensure_limits({host_limit("local"): 2, "x2c-xnat": 2})

    state = process_experiment(
        settings_path=str(settings),
        project=project,
        experiment="S1_MR1",
        pipeline="demo",
        host="local",
        return_state=True,
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert isinstance(result, ExperimentResult)
    assert (result.state, result.action, result.experiment) == (DONE, "submit", eid)
    assert result.job_id and result.in_flight is not None
    assert result.xnat_uri.endswith(f"/data/experiments/{eid}/resources/DEMO_STATS")
    with connect(xnat_config(xnat_server)) as session:
        status = resource_status(session, eid, "DEMO_STATS", "1.0.0")
    assert status.done, status.reason
    assert status.provenance is not None
    assert status.provenance["job"]["job_id"] == result.job_id
    assert len(local_jobs(tmp_path)) == 1
    assert not (tmp_path / "work" / "demo" / eid).exists(), "the job directory was cleaned"

    run_id = state.state_details.flow_run_id
    assert run_id is not None
    key = f"x2c-{project.lower()}-s1-mr1-demo"
    arts = poll(
        lambda: (a := artifacts_by_key(run_id)) and key in a and f"{key}-summary" in a and a,
        "the run's artifacts",
    )
    [row] = json.loads(arts[key].data)  # a table artifact's data is its rows as JSON
    assert row["state"] == "done" and row["job id"] == result.job_id and row["host"] == "local"
    assert row["XNAT result"] == result.xnat_uri

    # The rerun: nothing but a check. No job, no upload, two XNAT requests (resource status).
    xnat_server.reset_counts()
    again = process_experiment(
        settings_path=str(settings),
        project=project,
        experiment=eid,
        label="S1_MR1",
        subject="S1",
        pipeline="demo",
        host="local",
    )
    assert isinstance(again, ExperimentResult)
    assert (again.state, again.action, again.in_flight) == (DONE, "skip_done", None)
    assert len(local_jobs(tmp_path)) == 1, "the rerun submitted nothing"
    assert non_admin_requests(xnat_server) <= 3, xnat_server.request_counts()

    # Nothing secret anywhere a user of the Prefect UI can look.
    text = poll(
        lambda: (t := recorded_text(run_id)) and "uploaded and verified" in t and t,
        "the run's logs",
    )
    assert str(settings) in text, "the parameters carry the settings file's path"
    assert xnat_server.password not in text


def test_a_run_on_a_fresh_server_creates_its_host_limit(
    xnat_server: XnatServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runtimes: None,
) -> None:
    """A run started on its own (by the watcher, or the CLI) before any fan-out or
    deployments/setup.py created the limits still runs, under a limit of the configured size."""
    from uuid import uuid4

    from prefect.client.orchestration import get_client

    host = f"fresh-{uuid4().hex[:8]}"
    project = xnat_server.new_project("LIM")
    eid = add_session(xnat_server, project, "S1", "S1_MR1", index=1)
    settings = write_settings(
        tmp_path / "x2c.yaml", xnat_server, tmp_path, host=host, max_in_flight=3
    )
    monkeypatch.setenv("XNAT_PASS", xnat_server.password)
    with get_client(sync_client=True) as client:
        names = {limit.name for limit in client.read_global_concurrency_limits(limit=200)}
    assert host_limit(host) not in names

    state = process_experiment(
        settings_path=str(settings),
        project=project,
        experiment=eid,
        pipeline="demo",
        host=host,
        return_state=True,
    )
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        assert client.read_global_concurrency_limit_by_name(host_limit(host)).limit == 3
