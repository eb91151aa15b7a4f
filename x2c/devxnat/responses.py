"""What handlers answer with when things go wrong, and small helpers for query parameters."""

from __future__ import annotations

from starlette.responses import Response

from x2c.devxnat.documents import error_page


class HTTPError(Exception):
    """Raised by handlers to answer with an XNAT-style error page."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


def error_response(status: int, reason: str, detail: str = "") -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="XNAT"'} if status == 401 else None
    return Response(
        error_page(status, reason, detail or reason),
        status_code=status,
        media_type="text/html",
        headers=headers,
    )


def field_param(params: dict[str, str], name: str) -> str | None:
    """A creation field given as ``name`` or as an xpath ending in ``/name`` (any case)."""
    wanted = name.lower()
    for key, value in params.items():
        k = key.lower()
        if k == wanted or k.endswith("/" + wanted):
            return value
    return None


def is_true(value: str | None) -> bool:
    """Whether a query flag (``overwrite=true``, ``extract=1``) is set."""
    return (value or "").lower() in ("true", "1", "yes")


def check_label(label: str) -> str:
    """Labels and IDs are plain: letters, digits, ``_``, ``-`` and ``.`` (as XNAT allows)."""
    ok = label and all(c.isalnum() or c in "_-." for c in label) and label not in (".", "..")
    if not ok:
        raise HTTPError(400, "Bad Request", f"invalid label {label!r}")
    return label
