"""One pass-level end to end through the real Grid Engine of the test cluster: reconcile passes
(no Prefect) submit the demo pipeline with ``qsub`` over the real sshd, later passes see the
jobs end (one ``qstat`` per pass), and the results land on devxnat, verified and read back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import Cluster
from tests.fixtures.xnat_data import add_session, xnat_config
from tests.x2c.helpers import QUICK, VENV_BIN, drive, make_settings
from x2c import reconcile
from x2c.config import HostConfig, SchedulerConfig
from x2c.recipe import Runtime
from x2c.reconcile import ScopeEntry
from x2c.xnat import connect, resource_status

pytestmark = pytest.mark.cluster


@pytest.fixture
def sge_rt(sge: Cluster, xnat_server: Any, tmp_path: Path) -> Iterator[Runtime]:
    host = HostConfig(
        name="sge",
        ssh=sge.alias,
        ssh_config=sge.ssh_config,
        known_hosts=sge.known_hosts,
        workdir=str(tmp_path / "sge work"),
        scheduler=SchedulerConfig(kind="sge", partition="all.q", **QUICK),
        path_prepend=(VENV_BIN,),
        max_in_flight=2,
    )
    runtime = Runtime(make_settings(xnat_server, tmp_path, host), xnat_config(xnat_server))
    yield runtime
    runtime.close()


def test_sge_passes_submit_and_upload_over_ssh(sge_rt: Runtime, xnat_server: Any) -> None:
    project = str(xnat_server.new_project("SGE"))
    eids = [add_session(xnat_server, project, f"G{i}", f"G{i}_MR1", index=i) for i in (1, 2, 3)]
    scope = [ScopeEntry(project, "demo", "sge")]
    first = reconcile.run_pass(sge_rt, scope)
    assert sorted(r.action for r in first).count("submit") == 2, first  # two places on the host
    assert all(r.job_id.isdigit() for r in first if r.action == "submit"), first
    rows = drive(sge_rt, scope, timeout=150)
    assert [r.state for r in rows] == ["done"] * 3, rows
    with connect(xnat_config(xnat_server)) as s:
        for eid in eids:
            assert resource_status(s, eid, "DEMO_STATS", sge_rt.pipeline("demo").version).done
    again = reconcile.run_pass(sge_rt, scope)
    assert [r.action for r in again] == ["skip_done"] * 3
