"""Create what the deployments in ``prefect.yaml`` need on a Prefect server: the process work
pool. (x2c holds no Prefect concurrency limits: the places in flight on each host are claims
on the host itself, see :mod:`x2c.claims`, so a crashed process or server never keeps them.)
It also creates the automation that marks a flow run Crashed when it stops sending heartbeats
(its worker or machine died; Prefect's "zombie flows" recipe): the deployments' runs send one
every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (set it, above 30, for the workers). A
crashed pass loses nothing: the next one finds its work on Y and X. The settings file is loaded
to check it before anything is deployed from it::

    python -m deployments.setup --config x2c.yaml
    prefect deploy --all

It talks to the server named by ``PREFECT_API_URL``, as ``prefect deploy`` does.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from x2c.errors import ConfigError
from x2c.settings import Settings, load_settings

log = logging.getLogger(__name__)

WORK_POOL = "x2c-process"


def ensure_work_pool(name: str = WORK_POOL) -> bool:
    """Create the process work pool ``name`` unless it exists; True when it was created."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return False
        except ObjectNotFound:
            pass
        client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                description="x2c flows: runs on the orchestrator (Z) as local processes",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
        return True


ZOMBIE_AUTOMATION = "x2c: crash flow runs without heartbeats"
ZOMBIE_AFTER_S = 120


def ensure_zombie_automation(within_s: float = ZOMBIE_AFTER_S) -> bool:
    """Create (once, by name) the automation that sets a flow run Crashed when no heartbeat
    or final state followed its last heartbeat within ``within_s``; True when created."""
    from datetime import timedelta

    from prefect.automations import (
        Automation,
        ChangeFlowRunState,
        EventTrigger,
        Posture,
        ResourceSpecification,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(ZOMBIE_AUTOMATION):
            return False
    Automation(
        name=ZOMBIE_AUTOMATION,
        description="A flow run that stopped sending heartbeats (its worker died) is Crashed.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {within_s:g} s: its worker or machine stopped",
            )
        ],
    ).create()
    return True


def setup(settings: Settings, *, work_pool: str = WORK_POOL) -> bool:
    """Create the work pool and the zombie-run automation unless they exist; True when the
    pool was created."""
    created = ensure_work_pool(work_pool)
    if ensure_zombie_automation():
        log.info("created the automation %r", ZOMBIE_AUTOMATION)
    log.info("process work pool %s %s", work_pool, "created" if created else "exists")
    log.info("settings %s: hosts %s", settings.source, ", ".join(sorted(settings.hosts)))
    return created


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments.setup", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--config", required=True, help="the x2c settings file (YAML)")
    parser.add_argument("--work-pool", default=WORK_POOL, help="process work pool name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    setup(settings, work_pool=args.work_pool)
    return 0


if __name__ == "__main__":
    sys.exit(main())
