"""The one check that a relative path given by someone else stays inside its base directory.

Transfers (file names from XNAT or a host) and job directories (staged inputs, archive members)
both need it; each passes the error class of its own boundary.
"""

from __future__ import annotations

import posixpath

from x2c.errors import X2CError


def contained_relpath(path: str, *, error: type[X2CError], inside: str) -> str:
    """Return ``path`` normalised, or raise ``error`` if it could leave its base directory.

    Accepts relative POSIX paths only: no absolute path, no ``..`` component, no NUL byte.
    ``inside`` names the base directory in the message (e.g. "the job directory").
    """
    norm = posixpath.normpath(path) if path else ""
    if (
        not path
        or "\0" in path
        or path.startswith("/")
        or norm in (".", "..")
        or norm.startswith("../")
        or ".." in path.split("/")
    ):
        raise error(
            f"refusing path {path!r}: it is not a relative path inside {inside} "
            "(no leading '/', no '..', no NUL byte); check where the name came from"
        )
    return norm
