"""What a transfer reads from: a file described by name, size and md5, and a way to stream it.

The XNAT layer produces these for XNAT files; hosts produce them for files on Y. Transfers only
see this protocol, so X -> Y, Y -> Z and Y -> X are the same code.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class FileRef:
    """One file to move: its path relative to the destination directory, its size in bytes and
    its md5 hex digest (None when the source cannot tell)."""

    path: str
    size: int
    md5: str | None


class ByteSource(Protocol):
    """Streams a file's bytes in chunks; the consumer verifies size and md5 as it goes.

    A source that checks the md5 itself says so with a true ``checks_md5`` attribute: its
    iterator raises :class:`~x2c.errors.IntegrityError` instead of ending when the bytes do not
    match ``ref.md5``, so a consumer that commits a file only once the iterator is exhausted
    need not hash the same bytes a second time.
    """

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the bytes of ``ref`` in chunks of at most ``chunk_size``."""
        ...
