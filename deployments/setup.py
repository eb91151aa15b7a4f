"""Create what the deployments in ``prefect.yaml`` need on a Prefect server: the process work
pool. (x2c holds no Prefect concurrency limits: the places in flight on each host are claims
on the host itself, see :mod:`x2c.claims`, so a crashed process or server never keeps them.)
The settings file is loaded to check it before anything is deployed from it::

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


def setup(settings: Settings, *, work_pool: str = WORK_POOL) -> bool:
    """Create the work pool unless it exists; True when it was created."""
    created = ensure_work_pool(work_pool)
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
