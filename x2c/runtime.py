"""The process-wide runtime: what x2c's recipe steps share in one orchestrator process.

Use :func:`runtime` at the entry point of a flow or command (after loading the settings and the
XNAT configuration once) to get the :class:`Runtime` every later step receives: one XNAT
session, one connection and scheduler per host, the pipelines and the ledger, each
opened on first use and reused by every flow and task of the process. Call
:func:`close_runtimes` when the process (or a test) ends. Build a :class:`Runtime` directly only
for a short-lived, private one (a dry run, a test) and :meth:`Runtime.close` it yourself.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

from x2c import xnat
from x2c.config import HostConfig, XnatConfig
from x2c.containers import image_digest
from x2c.hosts import Host, open_host
from x2c.jobscript import effective_runtime
from x2c.ledger import Ledger
from x2c.pipelines import Pipeline
from x2c.provenance import public_url
from x2c.schedulers import Scheduler, make_scheduler
from x2c.settings import Settings
from x2c.xnat import Contents, Experiment

T = TypeVar("T")


class Kept(Generic[T]):
    """What one step of a pass read from XNAT, kept for a later step of the same pass so it
    does not ask again: each value is taken once, trusted for ``ttl_s`` seconds (a pass
    checks and launches within seconds), and only the newest ``size`` are kept."""

    def __init__(self, size: int = 4096, ttl_s: float = 600.0) -> None:
        self.size, self.ttl_s = size, ttl_s
        self._lock = threading.Lock()
        self._values: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def put(self, key: str, value: T) -> None:
        """Keep ``value`` under ``key`` (replacing an older one)."""
        now = time.monotonic()
        with self._lock:
            self._values.pop(key, None)
            self._values[key] = (now, value)
            while self._values and (
                len(self._values) > self.size
                or next(iter(self._values.values()))[0] < now - self.ttl_s
            ):
                self._values.popitem(last=False)

    def take(self, key: str) -> T | None:
        """The value kept under ``key``, once, if still fresh."""
        with self._lock:
            kept = self._values.pop(key, None)
        if kept is None or kept[0] < time.monotonic() - self.ttl_s:
            return None
        return kept[1]


class Runtime:
    """What the recipe steps share in one process for one settings file: the XNAT session, one
    connection and one scheduler per host, the pipelines and the ledger, and ``xnat_slot``:
    the XNAT transfers of the process (stage, upload) at most ``limits.xnat_transfers`` at once.

    Everything is opened lazily on first use and cached; safe to use from many threads. Get the
    process-wide one with :func:`runtime`; :meth:`close` releases it all.
    """

    def __init__(self, settings: Settings, xnat_config: XnatConfig) -> None:
        self.settings = settings
        self.xnat_config = xnat_config
        self.ledger = Ledger(settings.state_dir)
        self._lock = threading.RLock()
        self._xnat: xnat.XnatSession | None = None
        self._hosts: dict[str, Host] = {}
        self._schedulers: dict[str, Scheduler] = {}
        self._pipelines: dict[str, Pipeline] = {}
        self._digests: dict[tuple[str, str], str | None] = {}
        self.xnat_slot = threading.BoundedSemaphore(settings.limits.xnat_transfers)
        self.documents: Kept[Contents] = Kept()
        """Experiment documents a pass's check read, for the selection of its launch."""
        self.looked_up: Kept[Experiment] = Kept()
        """Experiments the seed form looked up, for its first pass instead of a listing."""
        self._closed = False

    def __repr__(self) -> str:
        server = public_url(self.xnat_config.url)
        hosts = sorted(self.settings.hosts)
        return f"Runtime(settings={self.settings.source!r}, xnat={server!r}, hosts={hosts!r})"

    @property
    def xnat(self) -> xnat.XnatSession:
        """The logged-in XNAT session (connects on first use: 1 request)."""
        with self._lock:
            if self._xnat is None:
                self._xnat = xnat.connect(self.xnat_config)
            return self._xnat

    def host_config(self, name: str) -> HostConfig:
        """The configuration of host ``name``."""
        return self.settings.host(name)

    def host(self, name: str) -> Host:
        """The open host ``name`` (one connection, reused)."""
        with self._lock:
            if name not in self._hosts:
                self._hosts[name] = open_host(self.host_config(name))
            return self._hosts[name]

    def scheduler(self, name: str) -> Scheduler:
        """The scheduler of host ``name``."""
        with self._lock:
            if name not in self._schedulers:
                cfg = self.host_config(name)
                self._schedulers[name] = make_scheduler(
                    self.host(name).runner, cfg.scheduler, workdir=cfg.workdir
                )
            return self._schedulers[name]

    def pipeline(self, name: str) -> Pipeline:
        """The pipeline ``name`` as the settings define it."""
        with self._lock:
            if name not in self._pipelines:
                self._pipelines[name] = self.settings.pipeline(name)
            return self._pipelines[name]

    def image_digest(self, host: str, pipeline: Pipeline) -> str | None:
        """The digest of ``pipeline``'s image on ``host`` (asked once per process)."""
        runtime = effective_runtime(pipeline, self.host_config(host).container_runtime)
        key = (host, pipeline.name)
        with self._lock:
            if key not in self._digests:
                self._digests[key] = image_digest(self.host(host).runner, runtime, pipeline.image)
            return self._digests[key]

    def close(self) -> None:
        """Close the hosts and the XNAT session."""
        with self._lock:
            self._closed = True
            hosts, self._hosts = list(self._hosts.values()), {}
            self._schedulers = {}
            session, self._xnat = self._xnat, None
        for host in hosts:
            host.close()
        if session is not None:
            session.close()


_RUNTIMES: dict[str, Runtime] = {}
_RUNTIMES_LOCK = threading.Lock()


def _runtime_key(settings: Settings, xnat_config: XnatConfig) -> str:
    password = xnat_config.password.get_secret_value().encode()
    secret = hashlib.sha256(password).hexdigest()
    return "\n".join([settings.model_dump_json(), xnat_config.model_dump_json(), secret])


def runtime(settings: Settings, xnat_config: XnatConfig) -> Runtime:
    """The process-wide :class:`Runtime` for these settings and XNAT configuration (made on
    first use, shared by every flow and task of the process)."""
    key = _runtime_key(settings, xnat_config)
    with _RUNTIMES_LOCK:
        rt = _RUNTIMES.get(key)
        if rt is None or rt._closed:
            rt = _RUNTIMES[key] = Runtime(settings, xnat_config)
        return rt


def close_runtimes() -> None:
    """Close every process-wide runtime (end of a process, or of a test)."""
    with _RUNTIMES_LOCK:
        found = list(_RUNTIMES.values())
        _RUNTIMES.clear()
    for rt in found:
        rt.close()
