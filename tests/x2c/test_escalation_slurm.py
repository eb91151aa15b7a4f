"""Escalation on the real SLURM of the test cluster, through reconcile passes: a job whose
walltime (1 minute, SLURM's granularity) is too short ends TIMEOUT, the pass launches it again
with twice the walltime keeping its place, and the second attempt's result lands on devxnat
with a provenance record that lists both attempts and their resources."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.fixtures.cluster import Cluster
from tests.fixtures.xnat_data import add_session, xnat_config
from tests.x2c.helpers import QUICK, VENV_BIN
from x2c import reconcile
from x2c.config import HostConfig, SchedulerConfig
from x2c.recipe import Runtime
from x2c.reconcile import ScopeEntry
from x2c.settings import Settings, XnatSource

pytestmark = pytest.mark.cluster

SLOW = 'sleep "$1"; echo slow > "$2/out.txt"'


def slow_pipeline(path: Path) -> Path:
    """Sleeps 70 s: past a 1-minute walltime, within 2 minutes."""
    path.write_text(
        yaml.safe_dump(
            {
                "name": "slow",
                "version": "1",
                "inputs": {"scan_types": ["T1*"], "resource": "NIFTI", "pick": "first"},
                "input_match": "*.nii*",
                "image": "none",
                "runtime": "none",
                "command": ["sh", "-c", SLOW, "slow", "70", "{outputs}"],
                "walltime": "00:01:00",
                "mem_mb": 64,
                "outputs": ["out.txt"],
                "archive": "SLOW",
                "resource": "SLOW",
                "escalation": {"on_timeout": {"walltime": "2x"}, "max_escalations": 1},
            }
        )
    )
    return path


@pytest.fixture
def slurm_rt(cluster: Cluster, xnat_server: Any, tmp_path: Path) -> Iterator[Runtime]:
    host = HostConfig(
        name="slurm",
        workdir=str(tmp_path / "slurm work"),
        scheduler=SchedulerConfig(kind="slurm", extra_args=("--oversubscribe",), **QUICK),
        path_prepend=(VENV_BIN,),
        max_in_flight=2,
        max_walltime="00:05:00",
    )
    settings = Settings(
        xnat=XnatSource(url=xnat_server.url, user=xnat_server.user),
        hosts={host.name: host},
        pipelines=(str(slow_pipeline(tmp_path / "slow.yaml")),),
        state_dir=tmp_path / "state",
    )
    runtime = Runtime(settings, xnat_config(xnat_server))
    yield runtime
    runtime.close()


def test_escalate_a_slurm_timeout_once_with_twice_the_walltime(
    slurm_rt: Runtime, xnat_server: Any
) -> None:
    project = str(xnat_server.new_project("ESC"))
    eid = add_session(xnat_server, project, "T1", "T1_MR1", index=1)
    scope = [ScopeEntry(project, "slow", "slurm")]
    first = reconcile.run_pass(slurm_rt, scope)
    assert [r.action for r in first] == ["submit"], first
    pause = threading.Event()
    seen: list[str] = []
    deadline = time.monotonic() + 300
    rows = first
    while not all(r.final for r in rows):  # passes, as drive() runs them, recording actions
        assert time.monotonic() < deadline, (rows, seen)
        pause.wait(0.2)
        rows = reconcile.run_pass(slurm_rt, scope)
        seen += [f"{r.action}:{r.job_id}" for r in rows if r.action in ("escalate", "submit")]
    assert [r.state for r in rows] == ["done"], rows
    second = rows[0].job_id
    # one more submission in all later passes: the escalated attempt, launched in the pass
    # that found the first job TIMEOUT (its "escalate" row replaced by the launch's)
    assert seen == [f"submit:{second}"], seen
    assert second != first[0].job_id
    time_limits = subprocess.run(
        ["scontrol", "show", "job", second], capture_output=True, text=True, check=False
    ).stdout
    assert not time_limits or "TimeLimit=00:02:00" in time_limits
    resp = requests.get(
        f"{xnat_server.url}/data/experiments/{eid}/resources/SLOW/files/provenance.json",
        auth=(xnat_server.user, xnat_server.password),
        timeout=30,
    )
    resp.raise_for_status()
    attempts = json.loads(resp.text)["job"]["attempts"]
    assert [(a["attempt"], a["job_id"], a["state"], a["walltime_s"]) for a in attempts] == [
        (1, first[0].job_id, "TIMEOUT", 60),
        (2, second, "COMPLETED", 120),
    ]
