"""``prefect deploy --all`` against the Prefect stack (``prefect server start`` on PostgreSQL):
what prefect.yaml and deployments.setup create, read back from the server. The server is shared:
the test reads the deployments, limits and automations it created, by name or ID."""

from __future__ import annotations

import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

from deployments.setup import ZOMBIE_AUTOMATION
from tests.deployments.conftest import ROOT, Deployed, deployment_ids, run
from tests.fixtures.prefect_stack import PrefectStack

KNOWN = {"reconcile", "nightly", "watcher", "on-new-session", "batch"}


def test_deploy_all_creates_the_deployments_pool_and_automation(
    prefect_stack: PrefectStack, deployed: Deployed
) -> None:
    with prefect_stack.settings(), get_client(sync_client=True) as client:
        pool = client.read_work_pool("x2c-process")
        assert pool.type == "process"
        # no concurrency limits: places in flight are claims on the hosts themselves
        names = {lim.name for lim in client.read_global_concurrency_limits(limit=200)}
        assert not {n for n in names if n.startswith(f"x2c-host-{deployed.local_host}")}
        [zombie] = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        assert zombie.enabled

        assert set(deployed.ids) >= KNOWN
        deployments = {name: client.read_deployment(deployed.ids[name]) for name in KNOWN}
        flows = {d.name: client.read_flow(d.flow_id).name for d in deployments.values()}
        assert flows == {
            "reconcile": "x2c-reconcile",
            "nightly": "x2c-reconcile",
            "watcher": "watch-xnat",
            "on-new-session": "x2c-reconcile",
            "batch": "x2c-reconcile",
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
        for name in ("reconcile", "watcher"):
            [every] = deployments[name].schedules
            assert isinstance(every.schedule, IntervalSchedule)
            assert every.schedule.interval.total_seconds() == 300
        assert deployments["on-new-session"].schedules == []
        assert deployments["batch"].schedules == []
        for name in ("reconcile", "nightly", "watcher"):
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
        assert action.parameters["experiments"] == ["{{ event.resource['xnat.experiment'] }}"]
        for name in ("reconcile", "nightly", "watcher", "batch"):
            assert (
                client.read_resource_related_automations(
                    f"prefect.deployment.{deployments[name].id}"
                )
                == []
            )

    # deploying twice changes nothing: the same deployments, one trigger
    run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], prefect_stack)
    assert deployment_ids(prefect_stack) == deployed.ids
    with prefect_stack.settings(), get_client(sync_client=True) as client:
        triggers = [
            a
            for name in KNOWN
            for a in client.read_resource_related_automations(
                f"prefect.deployment.{deployed.ids[name]}"
            )
        ]
        assert len(triggers) == 1, "the trigger is replaced, not added to"
        assert len(client.read_automations_by_name(ZOMBIE_AUTOMATION)) == 1
