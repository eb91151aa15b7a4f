"""Checking a result archive on the compute host before anything of it leaves Y (issue 9).

A job's archive is whatever the node wrote: a compromised or buggy container, or anyone who
can write to the job directory, could put a member in it that lands outside the directory it
is unpacked into (``../x``, ``/etc/x``), a symbolic or hard link that points anywhere, or a
device file. :func:`check_archive` lists every member on the host, through
:class:`~x2c.hosts.host.Host` methods only, and refuses such an archive with
:class:`~x2c.errors.UnsafeArchiveError` naming the member; it also returns the archive's own
size and md5 (computed on Y) for the provenance record.

* zip: only the central directory is read, from the end of the file (``Host.read_bytes`` with
  ``tail``: two small reads at most), never the members' data;
* tar, tar.gz/tgz, tar.bz2, tar.xz: the archive is streamed once through Z's memory
  (``Host.read_file``), headers parsed, member data skipped; nothing is written on Z.

Paths go through the one containment check, :func:`x2c.paths.contained_relpath`.
"""

from __future__ import annotations

import io
import logging
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from x2c.errors import UnsafeArchiveError
from x2c.hosts.host import Host
from x2c.paths import contained_relpath
from x2c.sources import FileRef
from x2c.transfers import describe

log = logging.getLogger(__name__)

ArchiveFormat = Literal["zip", "tar"]

TAIL_FIRST = 64 * 1024 + 22 + 20 + 56
"""Bytes read from the end of a zip first: the largest end-of-central-directory record (its
comment is at most 64 KiB) plus the zip64 locator and record."""

MAX_DIRECTORY = 256 << 20
"""The largest zip central directory x2c reads (about two million members)."""

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class ArchiveListing:
    """A checked archive: ``ref`` (its size and md5 on the host, path relative to ``root``),
    its ``format`` and every member's name as stored."""

    ref: FileRef
    format: ArchiveFormat
    members: tuple[str, ...]


def archive_format(path: str) -> ArchiveFormat:
    """The archive format the file name says (``.zip`` or a tar suffix); refuses any other."""
    lower = path.lower()
    if lower.endswith(".zip"):
        return "zip"
    if lower.endswith(_TAR_SUFFIXES):
        return "tar"
    raise UnsafeArchiveError(
        f"{path!r} is neither a .zip nor a tar archive ({', '.join(_TAR_SUFFIXES)}); "
        "set the pipeline's archive_format to zip or tar.gz",
        member="",
        kind="unknown format",
    )


def check_archive(host: Host, path: str, *, root: str | None = None) -> ArchiveListing:
    """List every member of the archive ``path`` on ``host`` and refuse an unsafe one.

    Returns its size and md5 (computed on the host by :func:`x2c.transfers.describe`, with
    ``ref.path`` relative to ``root``) and the member names. Raises
    :class:`~x2c.errors.UnsafeArchiveError` for a member with an absolute or ``..`` path, a
    symbolic or hard link, a device, FIFO or socket, or an archive that cannot be parsed; the
    host's own errors (:class:`~x2c.errors.TransferError`, ...) pass through.
    """
    fmt = archive_format(path)
    ref = describe(host, path, root=root)
    where = f"{path!r} on {host.name}"
    members = (
        _zip_members(host, path, ref.size, where)
        if fmt == "zip"
        else _tar_members(host, path, where)
    )
    names = tuple(name for name, _kind in members)
    for name, kind in members:
        _check_member(name, kind, where)
    log.info("%s: %d members checked, md5 %s, %d bytes", where, len(names), ref.md5, ref.size)
    return ArchiveListing(ref=ref, format=fmt, members=names)


def _refuse(where: str, member: str, kind: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"archive {where} holds member {member!r}, {kind}; refusing to collect or upload it. "
        "Check the pipeline's container and the job directory (someone may have changed the "
        "archive), then rerun the job (retry_failed=True)",
        member=member,
        kind=kind,
    )


def _check_member(name: str, kind: str, where: str) -> None:
    if kind != "file" and kind != "directory":
        raise _refuse(where, name, kind)
    # A backslash separates directories for Windows unpackers, a drive letter makes a path
    # absolute there: check the name as they would read it too.
    as_posix = name.replace("\\", "/")
    try:
        contained_relpath(as_posix, error=UnsafeArchiveError, inside="the archive")
    except UnsafeArchiveError:
        raise _refuse(where, name, "a path that leaves the archive (absolute or '..')") from None
    if _DRIVE.match(as_posix):
        raise _refuse(where, name, "a path with a drive letter (absolute on Windows)")


# ---- zip: the central directory, read from the end of the file ----------------------------


class _NeedEarlier(Exception):
    """zipfile asked for bytes before the tail read so far; ``offset`` is where it starts."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class _Tail(io.RawIOBase):
    """The last bytes of a file of ``size`` bytes, seekable as if it were the whole file."""

    def __init__(self, size: int, data: bytes) -> None:
        self._size = size
        self._data = data
        self._start = size - len(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self._pos >= self._size:
            return 0
        if self._pos < self._start:
            raise _NeedEarlier(self._pos)
        chunk = self._data[self._pos - self._start : self._pos - self._start + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16  # the unix mode, when the packer stored one
    fmt = stat.S_IFMT(mode)
    if fmt == stat.S_IFLNK:
        return "a symbolic link"
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        return "a device file"
    if fmt in (stat.S_IFIFO, stat.S_IFSOCK):
        return "a FIFO or socket"
    if fmt not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"an entry of unknown file type {oct(fmt)}"
    return "directory" if info.is_dir() else "file"


def _zip_members(host: Host, path: str, size: int, where: str) -> list[tuple[str, str]]:
    want = min(size, TAIL_FIRST)
    for _attempt in range(2):
        data = host.read_bytes(path, tail=want)
        if data is None or len(data) != want:
            raise _refuse(where, "", f"an archive that changed while it was read ({size} bytes)")
        try:
            with zipfile.ZipFile(_Tail(size, data)) as zf:
                return [(info.filename, _zip_kind(info)) for info in zf.infolist()]
        except _NeedEarlier as exc:
            want = size - exc.offset
            if want > MAX_DIRECTORY:
                raise _refuse(
                    where, "", f"a central directory of {want} bytes (more than {MAX_DIRECTORY})"
                ) from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
            raise _refuse(where, "", f"not a readable zip archive ({exc})") from exc
    raise _refuse(where, "", "a zip whose central directory could not be located")


# ---- tar: streamed once, headers only ------------------------------------------------------


class _Chunks(io.RawIOBase):
    """An iterator of byte chunks as a forward-only readable stream."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = chunk
        count = min(len(buffer), len(self._rest))
        buffer[:count] = self._rest[:count]
        self._rest = self._rest[count:]
        return count


def _tar_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"a hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.isdir():
        return "directory"
    if member.isreg():
        return "file"
    return f"an entry of unknown tar type {member.type!r}"


def _tar_members(host: Host, path: str, where: str) -> list[tuple[str, str]]:
    stream = io.BufferedReader(_Chunks(host.read_file(path)), buffer_size=1 << 20)
    members: list[tuple[str, str]] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tf:
            for member in tf:
                members.append((member.name, _tar_kind(member)))
                # refuse at the first bad member: no need to stream the rest
                _check_member(member.name, members[-1][1], where)
    except (tarfile.TarError, zlib.error, EOFError, OSError) as exc:
        raise _refuse(where, "", f"not a readable tar archive ({exc})") from exc
    if not members:
        raise _refuse(where, "", "an empty or unreadable tar archive")
    return members
