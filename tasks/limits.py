"""The global concurrency limits x2c holds, by name, and the means to create and hold them.

Two kinds of limit, both Prefect global concurrency limits so that they hold ACROSS flow runs (a
nightly run, a watcher-started run and a manual batch all draw from the same slots), and both held
with leases so a crashed process's slots come back when its lease expires:

- ``x2c-host-<host>``: experiments in flight on one compute host (``HostConfig.max_in_flight``).
  A slot is taken before the experiment's first step touches the host and given back when the
  experiment ends, whatever the outcome: it bounds the job directories, staged inputs and queued
  jobs one orchestrator puts on a cluster.
- ``x2c-xnat``: concurrent XNAT transfer steps (``limits.xnat_transfers``): staging X -> Y and
  uploading to X, the steps that keep an XNAT request stream open for long.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from x2c.settings import Settings

XNAT_LIMIT = "x2c-xnat"

# A lease outlives a stalled renewal this long; a crashed run's slots come back after it.
LEASE_S = 300.0

# Limits this process has seen on the server: holding a slot asks the API only the first time.
_present: set[str] = set()
_present_lock = threading.Lock()


def host_limit(host: str) -> str:
    """The name of the limit on experiments in flight on ``host``."""
    return f"x2c-host-{host}"


def wanted_limits(settings: Settings) -> dict[str, int]:
    """Every global concurrency limit x2c holds, name -> slots, from the settings."""
    limits = {host_limit(name): host.max_in_flight for name, host in settings.hosts.items()}
    limits[XNAT_LIMIT] = settings.limits.xnat_transfers
    return limits


@contextmanager
def _slot(name: str, slots: int) -> Iterator[None]:
    # A run started on its own (the watcher's, a CLI run) may be the first on a fresh server:
    # create a missing limit with the configured size rather than fail, once per process.
    if name not in _present:
        ensure_limits({name: slots})
    with concurrency(name, occupy=1, lease_duration=LEASE_S, strict=True):
        yield


def host_slot(host: str, slots: int) -> AbstractContextManager[None]:
    """Hold one in-flight slot on ``host`` for the duration of the block (waits for one);
    ``slots`` sizes the limit if it does not exist yet."""
    return _slot(host_limit(host), slots)


def xnat_slot(slots: int) -> AbstractContextManager[None]:
    """Hold one XNAT transfer slot for the duration of the block (waits for one); ``slots``
    sizes the limit if it does not exist yet."""
    return _slot(XNAT_LIMIT, slots)


def ensure_limits(wanted: Mapping[str, int], *, update: bool = False) -> dict[str, int]:
    """Create every limit in ``wanted`` (name -> slots) that the Prefect API lacks.

    Existing limits keep their value unless ``update`` is true: whoever changed a limit in the UI
    meant it, and a flow run must not undo that. Returns the limits as they now stand.
    """
    now: dict[str, int] = {}
    with get_client(sync_client=True) as client:
        for name, slots in sorted(wanted.items()):
            try:
                current = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                try:
                    client.create_global_concurrency_limit(
                        GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True)
                    )
                    now[name] = slots
                except ObjectAlreadyExists:  # another run created it meanwhile: theirs stands
                    now[name] = client.read_global_concurrency_limit_by_name(name).limit
                continue
            if update and current.limit != slots:
                client.update_global_concurrency_limit(
                    name, GlobalConcurrencyLimitUpdate(limit=slots, active=True)
                )
                now[name] = slots
            else:
                now[name] = current.limit
    with _present_lock:
        _present.update(now)
    return now
