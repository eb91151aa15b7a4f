"""The nightly ledger on the orchestrator (Z): what x2c already knows about each experiment, so
that a nightly run over an unchanged project costs one listing request and nothing more.

One JSON file per (project, pipeline) under ``<state_dir>/ledger/``, mapping an experiment's
accession ID to the experiment's ``last_modified`` when x2c last verified it, the pipeline
version, and the verdict: ``done`` (the result resource was verified on XNAT), ``nothing``
(no input matched; the reason is kept) or ``failed`` (the job failed; reported again, without a
request, until the experiment or the pipeline version changes). An entry counts only while
both the ``last_modified`` and the version still match: any change on XNAT or a new pipeline
version sends the experiment back through a real check. The ledger is a cache: deleting it
costs requests, never correctness. Writes are atomic (temporary file, then rename) and
serialised by a lock file, so several worker processes can share one state directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from x2c.errors import ConfigError

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


DONE = "done"
NOTHING = "nothing"
FAILED = "failed"


def is_fresh(entry: Mapping[str, Any] | None, last_modified: str, version: str) -> bool:
    """True when a ledger ``entry`` still holds: same ``last_modified`` and pipeline
    ``version`` (an empty ``last_modified`` never matches)."""
    return (
        entry is not None
        and bool(last_modified)
        and entry.get("last_modified") == last_modified
        and entry.get("version") == version
    )


class Ledger:
    """The ledger under ``state_dir`` (created on first write)."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "ledger"
        self._lock = threading.Lock()

    def path(self, project: str, pipeline: str) -> Path:
        """The file holding ``project``'s entries for ``pipeline``."""
        name = f"{_UNSAFE.sub('_', project)}.{_UNSAFE.sub('_', pipeline)}.json"
        return self.root / name

    def entries(self, project: str, pipeline: str) -> dict[str, dict[str, Any]]:
        """Every entry of ``project`` for ``pipeline``, by experiment ID."""
        path = self.path(project, pipeline)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable ledger %s (%s); it will be rebuilt", path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def known(
        self, project: str, pipeline: str, experiment: str, last_modified: str, version: str
    ) -> bool:
        """True when ``experiment`` was verified done (or found to have nothing to process) at
        exactly this ``last_modified`` for this pipeline ``version``. For many experiments,
        read :meth:`entries` once and use :func:`is_fresh`."""
        entry = self.entries(project, pipeline).get(experiment)
        return is_fresh(entry, last_modified, version)

    def record_done(
        self, project: str, pipeline: str, experiment: str, last_modified: str, version: str
    ) -> None:
        """Remember that ``experiment`` holds the verified result of ``version``."""
        self.record(project, pipeline, version, [(experiment, last_modified, DONE, "")])

    def record_nothing(
        self,
        project: str,
        pipeline: str,
        experiment: str,
        last_modified: str,
        version: str,
        reason: str,
    ) -> None:
        """Remember that ``experiment`` had nothing to process for ``version``, and why."""
        self.record(project, pipeline, version, [(experiment, last_modified, NOTHING, reason)])

    def record(
        self,
        project: str,
        pipeline: str,
        version: str,
        verdicts: Iterable[tuple[str, str, str, str]],
        *,
        job_ids: Mapping[str, str] | None = None,
    ) -> None:
        """Remember many verdicts in one write: (experiment, last_modified, ``done`` or
        ``nothing`` or ``failed``, reason), with the job of each failure in ``job_ids``.
        Entries without a ``last_modified`` are not kept (they could never be trusted)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        new = {
            experiment: {
                "last_modified": last_modified,
                "version": version,
                "verdict": verdict,
                "reason": reason,
                "checked_at": now,
                "job_id": (job_ids or {}).get(experiment, ""),
            }
            for experiment, last_modified, verdict, reason in verdicts
            if last_modified
        }
        if not new:
            return
        path = self.path(project, pipeline)
        with self._locked(path):
            entries = self.entries(project, pipeline)
            entries.update(new)
            tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
            tmp.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(path)

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the ledger directory {self.root}: {exc.strerror}; check "
                "state_dir in the settings"
            ) from exc
        with self._lock, open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
