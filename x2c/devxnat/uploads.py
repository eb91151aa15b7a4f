"""Receiving files: stream a request body to a temporary file, then commit it into a resource.

Bytes go to ``DIR/tmp`` while their md5 and size are computed, so memory stays flat whatever the
file size; committing is a rename into the resource directory plus an index update under the
store lock, so a failed or interrupted upload never leaves a partial file in a resource.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio

from x2c.devxnat.archives import CHUNK, clean_relpath, extract
from x2c.devxnat.store import Json, Store, now_stamp


@dataclass
class Received:
    """One uploaded file sitting in ``DIR/tmp``: where, how big, its md5."""

    path: Path
    size: int
    md5: str


def md5_of(path: Path) -> str:
    """The hex md5 of a file, read in chunks."""
    digest = hashlib.md5()  # noqa: S324 - XNAT's digest is md5; this is not for security
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


async def receive_stream(store: Store, chunks: AsyncIterator[bytes]) -> Received:
    """Write an async byte stream to a new temporary file, computing size and md5 on the way."""
    path = store.temp_path()
    digest = hashlib.md5()  # noqa: S324 - XNAT's digest is md5
    size = 0
    try:
        async with await anyio.open_file(path, "wb") as out:
            async for chunk in chunks:
                if chunk:
                    digest.update(chunk)
                    size += len(chunk)
                    await out.write(chunk)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return Received(path, size, digest.hexdigest())


def receive_file(store: Store, src: BinaryIO) -> Received:
    """Copy an open (spooled) upload to a new temporary file, computing size and md5."""
    path = store.temp_path()
    digest = hashlib.md5()  # noqa: S324 - XNAT's digest is md5
    size = 0
    try:
        with open(path, "wb") as out:
            while block := src.read(CHUNK):
                digest.update(block)
                size += len(block)
                out.write(block)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return Received(path, size, digest.hexdigest())


@dataclass
class Outcome:
    """What an upload did: files written and existing files left alone."""

    written: list[str]
    duplicates: list[str]


def commit(
    store: Store,
    resource: Json,
    touched: Json | None,
    files: list[tuple[str, Received]],
    overwrite: bool,
    meta: dict[str, str],
    save: bool = True,
) -> Outcome:
    """Move received files into ``resource`` under their relative paths; update the index.

    Without ``overwrite`` an existing file is left alone and reported as a duplicate. ``touched``
    (the experiment, if any) gets a new ``last_modified``. Temporary files not moved are removed.
    ``save=False`` leaves writing the index to the caller (for bulk loads such as the demo).
    """
    outcome = Outcome([], [])
    try:
        with store.lock:
            if resource.get("deleted"):
                raise LayoutError(f"resource {resource['label']} was deleted during the upload")
            base = store.resource_dir(resource)
            _check_layout(resource, [rel for rel, _ in files])
            for rel, rec in files:
                if rel in resource["files"] and not overwrite:
                    outcome.duplicates.append(rel)
                    continue
                target = base / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(rec.path, target)
                resource["files"][rel] = {
                    "size": rec.size,
                    "md5": rec.md5,
                    "format": meta.get("format", ""),
                    "content": meta.get("content", ""),
                    "tags": meta.get("tags", ""),
                }
                outcome.written.append(rel)
            if outcome.written and touched is not None:
                touched["last_modified"] = now_stamp()
            if save:
                store.save()
    finally:
        for _, rec in files:
            with contextlib.suppress(FileNotFoundError):
                rec.path.unlink()
    return outcome


class LayoutError(ValueError):
    """Raised when an upload would put a file where a directory is, or the other way round, or
    its resource was deleted while the bytes were arriving."""


def _check_layout(resource: Json, new: list[str]) -> None:
    """Refuse, before anything moves, files that clash with directories (``a`` and ``a/b``)."""
    names = set(resource["files"]) | set(new)
    dirs = {rel.rsplit("/", i)[0] for rel in names for i in range(1, rel.count("/") + 1)}
    clash = sorted(names & dirs)
    if clash:
        raise LayoutError(f"{clash[0]} would be both a file and a directory")


def unpack(store: Store, received: Received, name: str, prefix: str) -> list[tuple[str, Received]]:
    """Extract an uploaded archive safely; its files, relative to ``prefix``, ready to commit.

    Raises :class:`~x2c.devxnat.archives.UnsafeArchiveError` or ``BadArchiveError`` and leaves
    nothing behind when the archive is hostile or unreadable.
    """
    workdir = store.temp_dir()
    out: list[tuple[str, Received]] = []
    try:
        rels = extract(received.path, name, workdir)
        for rel in rels:
            full = clean_relpath(f"{prefix}/{rel}" if prefix else rel)
            moved = store.temp_path()
            os.replace(workdir / rel, moved)
            out.append((full, Received(moved, moved.stat().st_size, md5_of(moved))))
        return out
    except BaseException:
        for _, rec in out:
            with contextlib.suppress(FileNotFoundError):
                rec.path.unlink()
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            received.path.unlink()
