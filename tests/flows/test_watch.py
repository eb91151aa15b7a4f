"""The watcher: one ``on-new-session`` pass per new session, exactly once, also when the
same session is seen again, the mark is lost, or a session ties with the mark."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.variables import Variable

from flows.reconcile import reconcile
from flows.watch import ON_NEW_SESSION, watch_xnat
from tasks.watch import variable_name
from tests.fixtures.xnat_data import add_session
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import write_settings
from x2c import recipe


@pytest.fixture
def runtimes() -> Iterator[None]:
    yield
    recipe.close_runtimes()


def runs_per_experiment(deployment_id: object) -> Counter[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
    return Counter(str(e) for r in runs for e in r.parameters["experiments"])


def test_each_new_session_starts_exactly_one_run(
    xnat_server: XnatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtimes: None
) -> None:
    project = xnat_server.new_project("WCH")
    old = add_session(xnat_server, project, "S0", "S0_MR1")
    settings = str(
        write_settings(tmp_path / "x2c.yaml", xnat_server, tmp_path, projects=[(project, "demo")])
    )
    monkeypatch.setenv("XNAT_PASS", xnat_server.password)
    # the deployment the watcher targets (nothing runs its runs here: counting them is the test)
    deployment_id = reconcile.to_deployment(
        name=ON_NEW_SESSION.split("/")[1], parameters={"settings_path": settings}
    ).apply()
    mark = variable_name(xnat_server.url, project, "demo")

    assert watch_xnat(settings) == [], "the first look only sets the mark"
    assert Variable.get(mark)["seen"] == [old]

    new1 = add_session(xnat_server, project, "S1", "S1_MR1")
    new2 = add_session(xnat_server, project, "S2", "S2_MR1")
    first = watch_xnat(settings)
    assert len(first) == 2
    assert runs_per_experiment(deployment_id) == {new1: 1, new2: 1}

    # seen again: the mark keeps them out
    assert watch_xnat(settings) == []
    # the mark lost (a crash before it was saved, say) and everything replayed: the
    # idempotency key returns the runs already made instead of new ones
    Variable.unset(mark)
    replay = watch_xnat(settings, backfill=True)
    assert set(first) <= set(replay)
    assert runs_per_experiment(deployment_id) == {old: 1, new1: 1, new2: 1}

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(first[0])
    assert run.name == f"{project}-S1_MR1"
    assert run.parameters["settings_path"] == settings
    assert xnat_server.password not in repr(run.parameters)
