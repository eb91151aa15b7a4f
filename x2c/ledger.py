"""The nightly ledger on the orchestrator (Z): what x2c already knows about each experiment, so
that a nightly run over an unchanged project costs one listing request and nothing more.

One JSON file per (project, pipeline) under ``<state_dir>/ledger/``, mapping an experiment's
accession ID to the experiment's ``last_modified`` when x2c last verified it, the pipeline
version, and the verdict: ``done`` (the result resource was verified on XNAT), ``nothing``
(no input matched; the reason is kept) or ``failed`` (the job failed; reported again, without a
request, until the experiment or the pipeline version changes). An entry counts only while
both the ``last_modified`` and the version still match: any change on XNAT or a new pipeline
version sends the experiment back through a real check. The ledger is a cache: deleting it
costs requests, never correctness.

Each file is a log: one JSON object per line, ``{"experiment": ..., <entry>}``, the last line of
an experiment winning. A verdict is one appended line, and a process reads only what was
appended since it last looked (it keeps the parsed entries while the file is the same), so
neither grows with the size of the project: rewriting a whole JSON file per verdict, and
re-reading it per experiment, made a pass over N experiments cost O(N^2) (measured at N=1,000:
~13 ms per experiment, most of the orchestrator's growth from N=100). When the log holds more
than twice as many lines as entries it is compacted (written whole to a temporary file, then
renamed). Appends and compactions are serialised by a lock file, so several worker processes
can share one state directory; a reader never takes a line that is not complete.
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
from dataclasses import dataclass
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


@dataclass
class _Read:
    """What a process last read of one ledger file: the file (inode), how far, the entries."""

    inode: int
    offset: int
    lines: int
    entries: dict[str, dict[str, Any]]


class Ledger:
    """The ledger under ``state_dir`` (created on first write)."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "ledger"
        self._lock = threading.Lock()
        self._read: dict[Path, _Read] = {}

    def path(self, project: str, pipeline: str) -> Path:
        """The file holding ``project``'s entries for ``pipeline``."""
        name = f"{_UNSAFE.sub('_', project)}.{_UNSAFE.sub('_', pipeline)}.jsonl"
        return self.root / name

    def entries(self, project: str, pipeline: str) -> dict[str, dict[str, Any]]:
        """Every entry of ``project`` for ``pipeline``, by experiment ID (a copy)."""
        with self._lock:
            return dict(self._load(self.path(project, pipeline)).entries)

    def entry(self, project: str, pipeline: str, experiment: str) -> dict[str, Any] | None:
        """The entry of ``experiment`` (cheap: a pass asks it once per experiment)."""
        with self._lock:
            return self._load(self.path(project, pipeline)).entries.get(experiment)

    def _load(self, path: Path) -> _Read:
        """The entries of ``path``, reading only what was appended since the last call (call
        with ``self._lock`` held)."""
        try:
            handle = open(path, "rb")  # noqa: SIM115 (closed below; the stat needs it open)
        except FileNotFoundError:
            self._read.pop(path, None)
            return _Read(0, 0, 0, {})
        except OSError as exc:
            log.warning("ignoring unreadable ledger %s (%s); it will be rebuilt", path, exc)
            return _Read(0, 0, 0, {})
        with handle:
            stat = os.fstat(handle.fileno())
            known = self._read.get(path)
            if known is None or known.inode != stat.st_ino or stat.st_size < known.offset:
                known = _Read(stat.st_ino, 0, 0, {})
            handle.seek(known.offset)
            tail = handle.read()
        complete = tail.rfind(b"\n") + 1  # a line being appended is taken next time
        for line in tail[:complete].splitlines():
            known.lines += 1
            try:
                entry = json.loads(line)
                experiment = entry.pop("experiment")
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring a damaged line of the ledger %s", path)
                continue
            if isinstance(experiment, str):
                known.entries[experiment] = entry
        known.offset += complete
        self._read[path] = known
        return known

    def known(
        self, project: str, pipeline: str, experiment: str, last_modified: str, version: str
    ) -> bool:
        """True when ``experiment`` was verified done (or found to have nothing to process) at
        exactly this ``last_modified`` for this pipeline ``version``."""
        return is_fresh(self.entry(project, pipeline, experiment), last_modified, version)

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
            known = self._load(path)
            if known.lines + len(new) > 2 * (len(known.entries) + len(new)) + 64:
                entries = {**known.entries, **new}
                tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
                tmp.write_bytes(_lines(entries))
                tmp.replace(path)
            else:
                with open(path, "ab") as handle:
                    # a writer that died mid-line left a fragment: end it, it stays ignored
                    torn = handle.tell() > known.offset
                    handle.write(b"\n" * torn + _lines(new))
            self._load(path)

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


def _lines(entries: Mapping[str, Mapping[str, Any]]) -> bytes:
    return b"".join(
        json.dumps({"experiment": experiment, **entry}, sort_keys=True).encode() + b"\n"
        for experiment, entry in entries.items()
    )
