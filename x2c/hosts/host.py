"""A compute host Y as x2c sees it: a filesystem plus a :class:`~x2c.hosts.base.Runner`.

:func:`open_host` builds one from a :class:`~x2c.config.HostConfig`: an SSH host (one asyncssh
connection shared by SFTP and commands, see :mod:`x2c.hosts.ssh`) when ``cfg.ssh`` is set, else
this machine (:class:`LocalHost`). Transfers and schedulers only use the methods below, so the
local host and a remote one behave the same; every failure arrives as an x2c error.
"""

from __future__ import annotations

import logging
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fsspec.implementations.local import LocalFileSystem

from x2c.errors import TransferError
from x2c.hosts.local import LocalRunner

if TYPE_CHECKING:
    from x2c.config import HostConfig
    from x2c.hosts.base import Runner

log = logging.getLogger(__name__)


class Host(ABC):
    """A filesystem and a command runner on one compute host; use it as a context manager.

    ``fs`` is the fsspec filesystem for callers that want fsspec; transfers use the file methods
    here, which translate every failure into x2c's error tree. ``generation`` counts connections
    (always 0 on the local host): a caller that saw a :class:`~x2c.errors.SSHConnectError` passes
    the generation it used to :meth:`reconnect`, so concurrent callers reconnect only once.
    """

    name: str
    runner: Runner

    @property
    @abstractmethod
    def fs(self) -> Any:
        """The fsspec filesystem of the host (``sshfs.SSHFileSystem`` or ``LocalFileSystem``)."""

    @property
    def generation(self) -> int:
        """How many times the connection was replaced; bumps on each reconnect."""
        return 0

    def reconnect(self, seen_generation: int) -> None:  # noqa: B027 (a no-op by default)
        """Replace a lost connection unless another caller already did; no-op locally."""

    @abstractmethod
    def write_file(self, path: str, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to ``path`` (created or truncated) and return the bytes written.

        Not atomic by itself: transfers write to a ``.part-`` name and :meth:`rename` it.
        Errors raised by ``chunks`` itself pass through untouched.
        """

    @abstractmethod
    def read_file(self, path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the bytes of ``path`` in chunks of at most ``chunk_size``."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Atomically rename ``src`` to ``dst``, replacing ``dst`` if it exists."""

    @abstractmethod
    def remove(self, path: str) -> None:
        """Remove the file ``path``; a missing file is not an error."""

    @abstractmethod
    def size(self, path: str) -> int:
        """Return the size in bytes of the file ``path``."""

    @abstractmethod
    def exists(self, path: str) -> bool:
        """Whether ``path`` exists; a lost connection raises, it never reads as "missing"."""

    @abstractmethod
    def read_bytes(self, path: str, *, tail: int | None = None) -> bytes | None:
        """The whole content of the small file ``path`` (its last ``tail`` bytes if given), or
        None when it does not exist. For registry entries, markers and log tails; stream
        large files with :meth:`read_file`."""

    @abstractmethod
    def makedirs(self, path: str) -> None:
        """Create the directory ``path`` and its parents; an existing one is fine."""

    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically: readers see the old or the new content,
        never a partial one (a temporary name beside it, then :meth:`rename`)."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        self.write_file(tmp, [data])
        self.rename(tmp, path)

    def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release the connection; the host cannot be used afterwards."""

    def __enter__(self) -> Host:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalHost(Host):
    """This machine as the compute host (Y = Z): plain file calls and :class:`LocalRunner`."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.runner = LocalRunner()
        self._fs = LocalFileSystem()

    @property
    def fs(self) -> LocalFileSystem:
        """fsspec's local filesystem."""
        return self._fs

    def _error(self, exc: OSError, action: str, path: str) -> TransferError:
        return TransferError(
            f"could not {action} {path!r} on {self.name}: {exc.strerror or exc}; "
            "check that the directory exists, is writable and has space",
            host=self.name,
        )

    def write_file(self, path: str, chunks: Iterable[bytes]) -> int:
        """Write ``chunks`` to the local file ``path``."""
        written = 0
        try:
            handle = open(path, "wb")  # noqa: SIM115 (closed below, errors translated)
        except OSError as exc:
            raise self._error(exc, "create", path) from exc
        with handle:
            for chunk in chunks:
                try:
                    handle.write(chunk)
                except OSError as exc:
                    raise self._error(exc, "write", path) from exc
                written += len(chunk)
        return written

    def read_file(self, path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the bytes of the local file ``path``."""
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(chunk_size):
                    yield chunk
        except OSError as exc:
            raise self._error(exc, "read", path) from exc

    def rename(self, src: str, dst: str) -> None:
        """:func:`os.replace`: atomic on one filesystem."""
        try:
            os.replace(src, dst)
        except OSError as exc:
            raise self._error(exc, f"rename {src!r} to", dst) from exc

    def remove(self, path: str) -> None:
        """Unlink ``path`` if it exists."""
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(exc, "remove", path) from exc

    def size(self, path: str) -> int:
        """The size of ``path`` from :func:`os.stat`."""
        try:
            return os.stat(path).st_size
        except OSError as exc:
            raise self._error(exc, "stat", path) from exc

    def exists(self, path: str) -> bool:
        """:func:`os.stat` succeeds; only "no such file" reads as missing."""
        try:
            os.stat(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._error(exc, "stat", path) from exc
        return True

    def read_bytes(self, path: str, *, tail: int | None = None) -> bytes | None:
        """The content (or last ``tail`` bytes) of the local file ``path``; None if missing."""
        try:
            with open(path, "rb") as handle:
                if tail is not None:
                    handle.seek(max(0, handle.seek(0, os.SEEK_END) - tail))
                return handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(exc, "read", path) from exc

    def makedirs(self, path: str) -> None:
        """:func:`os.makedirs` with ``exist_ok``."""
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise self._error(exc, "create the directory", path) from exc


def open_host(cfg: HostConfig) -> Host:
    """Open the host ``cfg`` describes: over SSH when ``cfg.ssh`` is set, else this machine.

    Use it as a context manager (``with open_host(cfg) as host:``) so the connection is closed.
    Raises :class:`~x2c.errors.HostKeyError`, :class:`~x2c.errors.SSHAuthError` or
    :class:`~x2c.errors.SSHConnectError` (after ``cfg.reconnect_attempts`` attempts).
    """
    if cfg.ssh is None:
        return LocalHost(cfg.name)
    from x2c.hosts.ssh import SSHHost  # asyncssh is imported only when SSH is used

    return SSHHost(cfg)
