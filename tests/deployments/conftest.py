"""``deployments.setup`` and ``prefect deploy --all`` on the Prefect stack's server (see
tests/fixtures/prefect_stack.py), undone after the session: the server is shared, so what the
deploy creates (the deployments of prefect.yaml, their triggers and flow runs) is deleted
again, and the tests read back only what they created."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
)
from prefect.exceptions import ObjectNotFound

from tests.fixtures.prefect_stack import PrefectStack
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import write_settings

ROOT = Path(__file__).resolve().parents[2]
# the deployments prefect.yaml defines (the tests assert on the ones they know by name)
DEPLOYMENTS = [
    d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
]


def run(argv: list[str], stack: PrefectStack, cwd: Path = ROOT) -> str:
    """Run a command against the stack's server; return its output, or fail with it."""
    done = subprocess.run(
        argv, cwd=cwd, env=stack.env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@dataclass(frozen=True)
class Deployed:
    """What the session's deploy created: the IDs of prefect.yaml's deployments, and the
    settings' host names (unique to this session)."""

    ids: dict[str, UUID]
    cluster_host: str
    local_host: str


def deployment_ids(stack: PrefectStack) -> dict[str, UUID]:
    """Name -> ID of the server's deployments named in prefect.yaml."""
    with stack.settings(), get_client(sync_client=True) as client:
        found = client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=DEPLOYMENTS))
        )
    return {d.name: d.id for d in found}


def undeploy(stack: PrefectStack, ids: list[UUID]) -> None:
    """Delete deployments ``ids`` with their triggers and flow runs."""
    with stack.settings(), get_client(sync_client=True) as client:
        for dep_id in ids:
            client.delete_resource_owned_automations(f"prefect.deployment.{dep_id}")
            with contextlib.suppress(ObjectNotFound):
                client.delete_deployment(dep_id)
        while runs := client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=ids)),
            limit=200,
        ):
            for flow_run in runs:
                client.delete_flow_run(flow_run.id)


@pytest.fixture(scope="session")
def deployed(
    prefect_stack: PrefectStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    """deployments.setup, then ``prefect deploy --all``, on the stack; undone after the session."""
    tmp_path = tmp_path_factory.mktemp("deploy")
    suffix = uuid.uuid4().hex[:8]
    cluster, local = f"cluster{suffix}", f"local{suffix}"
    settings = tmp_path / "x2c.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": "https://xnat.example.org", "user": "x2c"},
                "hosts": {
                    cluster: {"ssh": "hpc", "workdir": "/scratch/x2c", "max_in_flight": 7},
                    local: {"workdir": str(tmp_path / "work"), "max_in_flight": 2},
                },
                "projects": [{"project": "P1", "pipeline": "demo", "host": local}],
                "limits": {"xnat_transfers": 3},
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    ids: dict[str, UUID] = {}
    try:
        run([sys.executable, "-m", "deployments.setup", "--config", str(settings)], prefect_stack)
        run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], prefect_stack)
        ids = deployment_ids(prefect_stack)
        yield Deployed(ids=ids, cluster_host=cluster, local_host=local)
    finally:
        undeploy(prefect_stack, list((ids or deployment_ids(prefect_stack)).values()))


def settings_with_cfg(
    tmp_path: Path, xnat_server: XnatServer, project: str, host: str, **fields: Any
) -> str:
    """A settings file whose XNAT password is in a pyxnat .cfg file beside it, readable by
    every worker on this machine (never a parameter); ``fields`` go to write_settings."""
    cfg = tmp_path / "xnat.cfg"
    cfg.touch(mode=0o600)
    cfg.write_text(
        json.dumps(
            {"server": xnat_server.url, "user": xnat_server.user, "password": xnat_server.password}
        )
    )
    path = write_settings(
        tmp_path / "x2c.yaml",
        xnat_server,
        tmp_path,
        projects=[(project, "demo")],
        host=host,
        **fields,
    )
    settings = yaml.safe_load(path.read_text())
    settings["xnat"] = {"config": str(cfg), "timeout": 20, "retries": 2}
    path.write_text(yaml.safe_dump(settings))
    return str(path)
