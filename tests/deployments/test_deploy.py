"""``prefect deploy --all`` against a real ``prefect server start``: what prefect.yaml and
deployments.setup create, read back from the server."""

from __future__ import annotations

import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

from tests.deployments.conftest import ROOT, PrefectServer, run


def test_deploy_all_creates_the_deployments_pool_and_limits(
    prefect_server: PrefectServer, deployed: str
) -> None:
    assert "x2c-process" in deployed

    with prefect_server.settings(), get_client(sync_client=True) as client:
        pool = client.read_work_pool("x2c-process")
        assert pool.type == "process"
        limits = {lim.name: lim.limit for lim in client.read_global_concurrency_limits(limit=50)}
        ours = {name: n for name, n in limits.items() if name.startswith("x2c-")}
        assert ours == {"x2c-host-cluster": 7, "x2c-host-local": 2, "x2c-xnat": 3}

        deployments = {d.name: d for d in client.read_deployments()}
        assert set(deployments) == {"nightly", "watcher", "on-new-session", "batch"}
        flows = {d.name: client.read_flow(d.flow_id).name for d in deployments.values()}
        assert flows == {
            "nightly": "x2c-nightly",
            "watcher": "watch-xnat",
            "on-new-session": "process-experiment",
            "batch": "process-experiments",
        }
        for d in deployments.values():
            assert d.work_pool_name == "x2c-process"
            assert d.parameters == {"settings_path": "x2c.yaml"}, "a path, never a secret"
            assert d.path is None or Path(d.path) == ROOT

        [nightly] = deployments["nightly"].schedules
        assert isinstance(nightly.schedule, CronSchedule)
        assert (nightly.schedule.cron, nightly.schedule.timezone) == (
            "0 2 * * *",
            "Europe/Amsterdam",
        )
        assert nightly.active
        [watcher] = deployments["watcher"].schedules
        assert isinstance(watcher.schedule, IntervalSchedule)
        assert watcher.schedule.interval.total_seconds() == 300
        assert deployments["on-new-session"].schedules == []
        assert deployments["batch"].schedules == []
        for name in ("nightly", "watcher"):
            limit = deployments[name].global_concurrency_limit
            assert limit is not None and limit.limit == 1
            assert str(deployments[name].concurrency_options.collision_strategy).endswith(
                "CANCEL_NEW"
            )

        on_new = deployments["on-new-session"]
        [automation] = client.read_resource_related_automations(f"prefect.deployment.{on_new.id}")
        assert automation.enabled
        assert automation.trigger.expect == {"x2c.session.arrived"}
        [action] = automation.actions
        assert action.deployment_id == on_new.id
        assert action.parameters["experiment"] == "{{ event.resource['xnat.experiment'] }}"
        for name in ("nightly", "watcher", "batch"):
            assert (
                client.read_resource_related_automations(
                    f"prefect.deployment.{deployments[name].id}"
                )
                == []
            )

    # deploying twice changes nothing: same four deployments, one trigger
    run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], prefect_server)
    with prefect_server.settings(), get_client(sync_client=True) as client:
        again = {d.name: d.id for d in client.read_deployments()}
        assert again == {name: d.id for name, d in deployments.items()}
        assert len(client.read_automations()) == 1
        assert {lim.name for lim in client.read_global_concurrency_limits(limit=50)} >= {
            "x2c-host-local",
            "x2c-xnat",
        }
