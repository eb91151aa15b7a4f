"""The development server's on-disk data: one JSON index plus a file tree, both under DIR.

Layout::

    DIR/index.json                  projects, subjects, experiments, scans, resources, file metadata
    DIR/users.json                  extra accounts (the admin comes from the command line)
    DIR/files/<resource id>/<path>  the bytes of every file, one directory per resource
    DIR/tmp/                        uploads in progress (renamed into place when complete)

Every change happens under one lock and ends with an atomic rewrite of the index (write a temporary
file, fsync, rename), so a crash leaves either the old or the new index, never half of one. File
bytes are written to ``DIR/tmp`` first and renamed into place, with their size and md5 computed
while streaming.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SITE_ID = "X2C"

Json = dict[str, Any]


def now_stamp() -> str:
    """The current time as XNAT prints it in listings: ``YYYY-MM-DD HH:MM:SS.mmm``."""
    t = dt.datetime.now()
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class User:
    """An account: the admin (all rights) or an extra user with per-project read rights."""

    name: str
    password: str
    admin: bool = False
    readable: frozenset[str] = frozenset()
    can_write: bool = False

    def can_read(self, project: str) -> bool:
        """Whether this user may see ``project`` (others get 404, as XNAT answers)."""
        return self.admin or project in self.readable

    def may_write(self, project: str) -> bool:
        """Whether this user may change ``project``'s contents (others get 403)."""
        return self.admin or (self.can_write and project in self.readable)


def belongs(rec: Json, project: str) -> bool:
    """Whether a subject or experiment is in ``project``: owned by it or shared into it."""
    return bool(rec["project"] == project or project in rec.get("shares", {}))


def visible(user: User, rec: Json) -> bool:
    """Whether ``user`` may see a subject or experiment: it can read the owning project or a
    project the record is shared into (sharing grants read access there, as in XNAT)."""
    return user.can_read(rec["project"]) or any(user.can_read(p) for p in rec.get("shares", {}))


def _labelled(rec: Json, project: str, label: str) -> bool:
    if rec["project"] == project:
        return bool(rec["label"] == label)
    shared: str | None = rec.get("shares", {}).get(project)
    return shared == label


def _empty_index() -> Json:
    return {
        "version": 1,
        "projects": {},
        "subjects": {},
        "experiments": {},
        "counters": {"subject": 0, "experiment": 0, "resource": 0},
    }


class Store:
    """The server's data model: dictionaries in memory, mirrored to ``DIR/index.json``.

    Handlers take ``store.lock`` (re-entrant) around any read-modify-write and call
    :meth:`save` after changing the index; the server calls :meth:`sync` before answering.
    Records are plain dicts:

    - project: ``ID, name, secondary_ID, description, pi_firstname, pi_lastname, insert_date,
      resources``
    - subject: ``ID, project, label, insert_date, resources``
    - experiment: ``ID, project, subject_ID, label, xsiType, date, insert_date, last_modified,
      scans, resources``; a scan: ``ID, type, xsiType, series_description, quality, note,
      resources``
    - subjects and experiments may carry ``shares``: ``{project ID: label there}`` for each
      project they are shared into (listed there with their owning ``project``);
    - resource: ``xnat_abstractresource_id, label, format, content, tags, insert_date, files``;
      a file: ``size, md5, format, content, tags``; bytes at ``files/<resource id>/<path>``.
    """

    def __init__(self, root: Path, admin_user: str, admin_password: str) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "files").mkdir(exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        self.lock = threading.RLock()
        self._sync_lock = threading.Lock()
        self._changes = self._synced = 0
        self._admin = User(admin_user, admin_password, admin=True)
        self._users_cache: tuple[int | None, dict[str, User]] | None = None
        index_path = self.root / "index.json"
        if index_path.exists():
            self.index: Json = json.loads(index_path.read_text(encoding="utf-8"))
        else:
            self.index = _empty_index()
            self.save()
            self.sync()
        self._clean_tmp()

    # -- persistence -------------------------------------------------------------------------

    def save(self) -> None:
        """Note a change of the index (call with the lock held, after every change);
        :meth:`sync` puts it on disk."""
        with self.lock:
            self._changes += 1

    def sync(self) -> None:
        """Write the index to disk (atomically, fsynced) unless a write made since the last
        change did: call it, without the lock, before answering a request that may have changed
        something, so the answer comes after the change is durable (as XNAT answers after its
        database commit). Requests arriving together share one write (a group commit): the whole
        index is written each time, and one write per change made N uploads cost O(N^2) (about
        35 ms per write at 2,000 sessions, measured)."""
        with self.lock:
            wanted = self._changes
        if self._synced >= wanted:
            return
        with self._sync_lock:
            if self._synced >= wanted:
                return
            with self.lock:
                text = json.dumps(self.index, separators=(",", ":"))
                upto = self._changes
            atomic_write_text(self.root / "index.json", text)
            self._synced = upto

    def _clean_tmp(self) -> None:
        for leftover in (self.root / "tmp").iterdir():
            if leftover.is_dir():
                for sub in sorted(leftover.rglob("*"), reverse=True):
                    if sub.is_dir() and not sub.is_symlink():
                        sub.rmdir()
                    else:
                        sub.unlink()
                leftover.rmdir()
            else:
                leftover.unlink()

    def temp_path(self) -> Path:
        """A fresh, unused path under ``DIR/tmp`` on the same file system as the data."""
        fd, name = tempfile.mkstemp(dir=self.root / "tmp", prefix="upload-")
        os.close(fd)
        return Path(name)

    def temp_dir(self) -> Path:
        """A fresh, empty directory under ``DIR/tmp`` (for unpacking archives)."""
        return Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix="extract-"))

    # -- users ---------------------------------------------------------------------------------

    @property
    def admin_name(self) -> str:
        """The admin account's name (from ``--user``)."""
        return self._admin.name

    def users(self) -> dict[str, User]:
        """Every account, the admin included; extra accounts are read from ``users.json``
        (again only when the file changed, since this runs on every request)."""
        path = self.root / "users.json"
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            stamp = None
        cached = self._users_cache
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found = {self._admin.name: self._admin}
        if stamp is not None:
            for name, rec in json.loads(path.read_text(encoding="utf-8")).items():
                if name == self._admin.name:
                    continue
                found[name] = User(
                    name=name,
                    password=str(rec["password"]),
                    admin=bool(rec.get("admin", False)),
                    readable=frozenset(rec.get("projects_readable", [])),
                    can_write=bool(rec.get("can_write", False)),
                )
        self._users_cache = (stamp, found)
        return found

    def put_user(
        self, name: str, password: str, projects_readable: list[str], can_write: bool
    ) -> None:
        """Add or replace an extra account in ``users.json``."""
        with self.lock:
            path = self.root / "users.json"
            data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            data[name] = {
                "password": password,
                "projects_readable": sorted(projects_readable),
                "can_write": can_write,
            }
            atomic_write_text(path, json.dumps(data, indent=1))
            self._users_cache = None

    # -- identifiers ---------------------------------------------------------------------------

    def next_id(self, kind: str) -> str:
        """A new accession number: ``X2C_S00001`` (subject), ``X2C_E00001`` (experiment), ``7``."""
        with self.lock:
            counters = self.index["counters"]
            counters[kind] = int(counters.get(kind, 0)) + 1
            n = counters[kind]
        if kind == "subject":
            return f"{SITE_ID}_S{n:05d}"
        if kind == "experiment":
            return f"{SITE_ID}_E{n:05d}"
        return str(n)

    # -- lookups -------------------------------------------------------------------------------

    def project(self, project_id: str) -> Json | None:
        """The project whose ID is ``project_id``, or None."""
        rec: Json | None = self.index["projects"].get(project_id)
        return rec

    def subject(self, ref: str, project: str | None = None) -> Json | None:
        """A subject by ID, or by label within ``project`` (owned or shared there)."""
        rec: Json | None = self.index["subjects"].get(ref)
        if rec is not None and (project is None or belongs(rec, project)):
            return rec
        if project is None:
            return None
        for cand in self.index["subjects"].values():
            if _labelled(cand, project, ref):
                found: Json = cand
                return found
        return None

    def experiment(
        self, ref: str, project: str | None = None, subject: str | None = None
    ) -> Json | None:
        """An experiment by ID, or by label within ``project`` (owned or shared there; and of
        ``subject`` when given)."""
        rec: Json | None = self.index["experiments"].get(ref)
        if (
            rec is not None
            and (project is None or belongs(rec, project))
            and (subject is None or rec["subject_ID"] == subject)
        ):
            return rec
        if project is None:
            return None
        for cand in self.index["experiments"].values():
            if not _labelled(cand, project, ref):
                continue
            if subject is None or cand["subject_ID"] == subject:
                found: Json = cand
                return found
        return None

    def subjects_of(self, project: str) -> Iterator[Json]:
        """The subjects of ``project`` (owned or shared there) in insertion order."""
        return (s for s in self.index["subjects"].values() if belongs(s, project))

    def experiments_of(self, project: str, subject: str | None = None) -> Iterator[Json]:
        """The experiments of ``project`` (owned or shared there; of one subject when
        ``subject`` is its ID)."""
        return (
            e
            for e in self.index["experiments"].values()
            if belongs(e, project) and (subject is None or e["subject_ID"] == subject)
        )

    # -- files ---------------------------------------------------------------------------------

    def resource_dir(self, resource: Json) -> Path:
        """The directory holding the bytes of ``resource``'s files."""
        return self.root / "files" / str(resource["xnat_abstractresource_id"])

    def file_path(self, resource: Json, rel: str) -> Path:
        """Where the bytes of file ``rel`` of ``resource`` live (``rel`` already validated)."""
        return self.resource_dir(resource) / rel

    def snapshot(self, rec: Json) -> Json:
        """A deep copy of a record, safe to use after the lock is released."""
        with self.lock:
            return copy.deepcopy(rec)


def new_resource(store: Store, label: str, fmt: str = "", content: str = "") -> Json:
    """A new, empty resource record with a fresh ``xnat_abstractresource_id``."""
    return {
        "xnat_abstractresource_id": int(store.next_id("resource")),
        "label": label,
        "format": fmt,
        "content": content,
        "tags": "",
        "insert_date": now_stamp(),
        "files": {},
    }
