"""Archives in and out: safe unpacking of uploaded zip and tar(.gz) files, streamed zip downloads.

Unpacking refuses the whole archive when any entry would escape its resource (absolute paths,
``..`` components, links, devices), so a hostile archive leaves nothing behind. Downloads are
produced as a stream of chunks with :mod:`zipfile` writing into a queue-like sink, so memory stays
flat whatever the size of the files.
"""

from __future__ import annotations

import posixpath
import shutil
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK = 1 << 20


class UnsafeArchiveError(ValueError):
    """Raised when an uploaded archive has an entry that would escape its resource."""


class BadArchiveError(ValueError):
    """Raised when an upload asked to be extracted is not a readable zip or tar archive."""


def clean_relpath(name: str) -> str:
    """``name`` as a safe relative path inside a resource, or raise :class:`UnsafeArchiveError`.

    Backslashes count as separators; empty, ``.`` and ``..`` components, absolute paths and drive
    letters are refused.
    """
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise UnsafeArchiveError(f"absolute path {name!r}")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts) or "\x00" in text:
        raise UnsafeArchiveError(f"path {name!r} escapes the resource")
    return posixpath.join(*parts)


def _check_dir(name: str) -> None:
    """Directory entries are implied by files; the archive root ("" or ".") is fine."""
    if name.replace("\\", "/").strip("/") in ("", "."):
        return
    clean_relpath(name)


def is_archive_name(name: str) -> bool:
    """Whether an uploaded file's name says it is an archive ``extract=true`` can unpack."""
    lower = name.lower()
    return lower.endswith((".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def extract(archive: Path, name: str, dest: Path) -> list[str]:
    """Unpack ``archive`` (called ``name`` by the client) into the empty directory ``dest``.

    Returns the relative paths of the regular files written. Every entry is checked before any
    byte is written; directories are implied, so only regular files are kept.
    """
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, dest)
    try:
        is_tar = tarfile.is_tarfile(archive)
    except OSError as exc:
        raise BadArchiveError(f"{name} is not a readable archive") from exc
    if is_tar:
        return _extract_tar(archive, dest)
    raise BadArchiveError(f"{name} is neither a zip nor a tar archive")


def _extract_zip(archive: Path, dest: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        for info in zf.infolist():
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                raise UnsafeArchiveError(f"symbolic link {info.filename!r}")
            if info.is_dir():
                _check_dir(info.filename)
                continue
            plan.append((info, clean_relpath(info.filename)))
        written = []
        for info, rel in plan:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, CHUNK)
            written.append(rel)
        return written


def _extract_tar(archive: Path, dest: Path) -> list[str]:
    try:
        with tarfile.open(archive) as tf:
            plan: list[tuple[tarfile.TarInfo, str]] = []
            for member in tf.getmembers():
                if member.isdir():
                    _check_dir(member.name)
                    continue
                if not member.isfile():
                    raise UnsafeArchiveError(f"{member.name!r} is a link or a device")
                plan.append((member, clean_relpath(member.name)))
            written = []
            for member, rel in plan:
                src = tf.extractfile(member)
                if src is None:
                    raise BadArchiveError(f"cannot read {member.name!r}")
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                written.append(rel)
            return written
    except tarfile.TarError as exc:
        raise BadArchiveError(f"unreadable tar archive: {exc}") from exc


class _Sink:
    """A write-only, unseekable file that hands what was written to the streaming generator."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def stream_zip(entries: Iterable[tuple[str, Path]]) -> Iterator[bytes]:
    """Yield a zip archive of ``(arcname, path)`` entries, chunk by chunk, never whole."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for arcname, path in entries:
            info = zipfile.ZipInfo.from_file(path, arcname)
            info.compress_type = zipfile.ZIP_STORED
            with open(path, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
                while True:
                    block = src.read(CHUNK)
                    if not block:
                        break
                    dst.write(block)
                    data = sink.take()
                    if data:
                        yield data
            data = sink.take()
            if data:
                yield data
    data = sink.take()
    if data:
        yield data
