"""The nightly reconcile: processes what is not done, and costs one listing when nothing is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.nightly import nightly
from tasks.report import DONE, SKIPPED, ExperimentResult
from tests.fixtures.xnat_data import add_session
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import write_settings
from x2c import recipe


@pytest.fixture
def runtimes() -> Iterator[None]:
    yield
    recipe.close_runtimes()


def xnat_requests(server: XnatServer) -> dict[str, int]:
    counts = server.request_counts()
    return {k: n for k, n in counts.items() if not k.split(" ", 1)[1].startswith("/x2c")}


def test_nightly_does_the_work_once_then_only_lists(
    xnat_server: XnatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtimes: None
) -> None:
    project = xnat_server.new_project("NGT")
    done = add_session(xnat_server, project, "S1", "S1_MR1", index=1)
    empty = add_session(xnat_server, project, "S2", "S2_MR1", scan_type="DWI")
    settings = str(
        write_settings(tmp_path / "x2c.yaml", xnat_server, tmp_path, projects=[(project, "demo")])
    )
    monkeypatch.setenv("XNAT_PASS", xnat_server.password)

    first: list[ExperimentResult] = nightly(settings)  # type: ignore[assignment]
    assert {r.experiment: r.state for r in first} == {done: DONE, empty: SKIPPED}

    xnat_server.reset_counts()
    assert nightly(settings) == []
    assert xnat_requests(xnat_server) == {"GET /data/projects/{project}/experiments": 1}
