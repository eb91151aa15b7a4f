"""Reconcile passes without Prefect, against the real devxnat server, the local host and the
local scheduler (the demo pipeline run bare by this venv's python): passes never wait for a
job, the in-flight cap is counted from the claims on the host, a killed pass is finished by the
next, two passes at once make one job and one upload per experiment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.xnat_data import add_session, xnat_config
from tests.x2c.helpers import drive, local_host, make_settings
from x2c import reconcile
from x2c.recipe import Runtime
from x2c.reconcile import ScopeEntry
from x2c.xnat import connect, resource_status


@pytest.fixture
def rt(xnat_server: Any, tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(
        make_settings(xnat_server, tmp_path, local_host(tmp_path)), xnat_config(xnat_server)
    )
    yield runtime
    runtime.close()


def test_a_pass_submits_and_a_later_pass_uploads(rt: Runtime, xnat_server: Any) -> None:
    project = str(xnat_server.new_project("RCN"))
    eids = [add_session(xnat_server, project, f"S{i}", f"S{i}_MR1", index=i) for i in (1, 2)]
    scope = [ScopeEntry(project, "demo", "local")]
    first = reconcile.run_pass(rt, scope)
    assert [r.action for r in first] == ["submit", "submit"], first
    rows = drive(rt, scope)
    assert [r.state for r in rows] == ["done", "done"], rows
    with connect(xnat_config(xnat_server)) as s:
        for eid in eids:
            assert resource_status(s, eid, "DEMO_STATS", rt.pipeline("demo").version).done
    again = reconcile.run_pass(rt, scope)
    assert [r.action for r in again] == ["skip_done", "skip_done"]
