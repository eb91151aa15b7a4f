"""Streaming XNAT files as a :class:`~x2c.sources.ByteSource`, verified while they flow.

Memory stays flat in the file size: bytes are hashed and handed on chunk by chunk. The size is
checked as it grows (a file longer than listed stops at once) and the md5 at the end; either
mismatch is an :class:`~x2c.errors.IntegrityError` naming the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import requests

from x2c.errors import IntegrityError
from x2c.sources import FileRef
from x2c.xnat.failures import error_for_exception
from x2c.xnat.session import XnatSession


@dataclass(frozen=True)
class XnatFileRef(FileRef):
    """A file on XNAT: ``path`` is where it goes (relative to the destination directory),
    ``size`` and ``md5`` come from XNAT's listing, ``uri`` is its server-relative, quoted
    address (``/data/experiments/.../files/...``) and ``source_path`` its path inside the
    XNAT resource."""

    uri: str
    source_path: str = ""


class XnatByteSource:
    """Implements :class:`~x2c.sources.ByteSource` for :class:`XnatFileRef`: hand it to the
    transfers module to stream X -> Y without it knowing about XNAT.

    Failures before the first byte are retried by the session; a break mid-stream raises
    :class:`~x2c.errors.XnatTransientError` and the consumer starts the file again.
    """

    checks_md5 = True
    """Each stream is hashed here, and a mismatch raises before the iterator ends."""

    def __init__(self, session: XnatSession) -> None:
        self._session = session

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the bytes of ``ref`` (an :class:`XnatFileRef`) in chunks of at most
        ``chunk_size``, raising :class:`IntegrityError` if size or md5 differ from ``ref``."""
        if not isinstance(ref, XnatFileRef):
            raise TypeError(f"XnatByteSource streams XnatFileRef, not {type(ref).__name__}")
        url = self._session.url + ref.uri
        what = f"download {ref.source_path or ref.path}"
        response = self._session.request("GET", ref.uri, what=what, stream=True)
        digest = hashlib.md5(usedforsecurity=False)
        received = 0
        try:
            for chunk in response.iter_content(chunk_size=chunk_size):
                received += len(chunk)
                if ref.size >= 0 and received > ref.size:
                    raise _mismatch(ref, url, "size", str(ref.size), f"more than {ref.size}")
                digest.update(chunk)
                yield chunk
        except requests.RequestException as exc:
            raise error_for_exception(exc, what=what, url=url) from exc
        finally:
            response.close()
        if ref.size >= 0 and received != ref.size:
            raise _mismatch(ref, url, "size", str(ref.size), str(received))
        actual = digest.hexdigest()
        if ref.md5 is not None and actual != ref.md5.lower():
            raise _mismatch(ref, url, "md5", ref.md5, actual)


def _mismatch(ref: FileRef, url: str, field: str, expected: str, actual: str) -> IntegrityError:
    return IntegrityError(
        f"{ref.path}: {field} {actual} differs from the {expected} XNAT lists for {url}: the "
        "file changed or is damaged on the server; check it there, then retry",
        name=ref.path,
        expected=expected,
        actual=actual,
        url=url,
    )
