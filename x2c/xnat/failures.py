"""The one place where requests and pyxnat failures become x2c errors.

:func:`error_for_exception` maps an exception raised by requests (or by pyxnat, whose
``core.errors`` classes borrow DB-API names) and :func:`error_for_status` maps an HTTP status;
callers ``raise error_for_...(...) from exc``. :func:`is_transient` says what the retry loop in
:mod:`x2c.xnat.session` may retry: 5xx answers, resets, timeouts; never a 4xx.
"""

from __future__ import annotations

import requests
from pyxnat.core import errors as pyxnat_errors

from x2c.errors import (
    XnatAuthError,
    XnatConflictError,
    XnatError,
    XnatNotFoundError,
    XnatTransientError,
)

# What to try next, by failure kind; appended to every message.
_HINT_CONNECT = "check the URL and that the server is up, then retry"
_HINT_DNS = "check the host name in the URL (XNAT_HOST or the config file's 'server')"
_HINT_TLS = (
    "check the URL's scheme and port (https to a plain-http port fails this way); if the "
    "certificate cannot be verified, set XnatConfig.verify to the site's CA bundle path"
)
_HINT_TIMEOUT = "the server is slow or overloaded: retry later or raise XnatConfig.timeout"
_HINT_AUTH = "check the user name and password (config file, XNAT_USER/XNAT_PASS or ~/.netrc)"


def _looks_like_dns_failure(exc: BaseException) -> bool:
    text = str(exc)
    return any(
        marker in text
        for marker in (
            "NameResolutionError",
            "Name or service not known",
            "nodename nor servname",
            "getaddrinfo failed",
            "Temporary failure in name resolution",
            "No address associated with hostname",
        )
    )


def error_for_exception(exc: BaseException, *, what: str, url: str) -> XnatError:
    """Translate a requests or pyxnat exception raised while doing ``what`` at ``url``.

    Connection resets, refusals and timeouts become :class:`XnatTransientError` (retried);
    DNS and TLS failures, malformed URLs and redirect loops become plain :class:`XnatError`
    (retrying cannot help). Anything else becomes :class:`XnatError` too, never swallowed.
    """
    if isinstance(exc, XnatError):
        return exc
    if isinstance(exc, requests.exceptions.SSLError):
        return XnatError(f"{what} failed: TLS handshake with {url} failed: {_HINT_TLS}", url=url)
    if isinstance(exc, requests.exceptions.ProxyError):
        return XnatTransientError(
            f"{what} failed: the HTTP proxy refused {url}: check the proxy settings", url=url
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return XnatTransientError(f"{what} timed out at {url}: {_HINT_TIMEOUT}", url=url)
    if isinstance(exc, requests.exceptions.ConnectionError):
        if _looks_like_dns_failure(exc):
            return XnatError(
                f"{what} failed: cannot resolve the host of {url}: {_HINT_DNS}", url=url
            )
        if "refused" in str(exc).lower():
            return XnatTransientError(
                f"{what} failed: connection refused by {url}: {_HINT_CONNECT}", url=url
            )
        return XnatTransientError(
            f"{what} failed: connection to {url} broke ({type(exc).__name__}): {_HINT_CONNECT}",
            url=url,
        )
    if isinstance(
        exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
    ):
        return XnatTransientError(
            f"{what} failed: the response from {url} was cut short or garbled: retry later",
            url=url,
        )
    if isinstance(exc, requests.exceptions.RetryError):
        return XnatTransientError(f"{what} failed after retries at {url}: retry later", url=url)
    if isinstance(exc, requests.exceptions.HTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status is not None:
            return error_for_status(status, what=what, url=url)
        return XnatError(f"{what} failed at {url}: {exc}", url=url)
    if isinstance(
        exc,
        requests.exceptions.MissingSchema
        | requests.exceptions.InvalidSchema
        | requests.exceptions.InvalidURL
        | requests.exceptions.URLRequired,
    ):
        return XnatError(
            f"{what} failed: {url!r} is not a usable URL (want https://host[:port][/path])",
            url=url,
        )
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return XnatError(
            f"{what} failed: redirect loop at {url}: check the URL's scheme and context path",
            url=url,
        )
    if isinstance(exc, requests.RequestException):
        return XnatError(f"{what} failed at {url}: {type(exc).__name__}: {exc}", url=url)
    if isinstance(exc, pyxnat_errors.OperationalError) and "Authentication" in str(exc):
        return XnatAuthError(
            f"{what} failed: XNAT rejected the login at {url}: {_HINT_AUTH}", url=url
        )
    if isinstance(exc, pyxnat_errors.Error | pyxnat_errors.Warning):
        return XnatError(f"{what} failed at {url}: pyxnat: {exc}", url=url)
    return XnatError(f"{what} failed at {url}: {type(exc).__name__}: {exc}", url=url)


def error_for_status(status: int, *, what: str, url: str, detail: str = "") -> XnatError:
    """Translate an HTTP error status from XNAT into the matching x2c error.

    401 and 403 are :class:`XnatAuthError`, 404 :class:`XnatNotFoundError` (XNAT answers 404
    for what the user may not read, too), 409 :class:`XnatConflictError`, 5xx
    :class:`XnatTransientError`, any other 4xx plain :class:`XnatError`.
    """
    tail = f" ({detail})" if detail else ""
    if status == 401:
        return XnatAuthError(
            f"{what} failed: XNAT answered 401 at {url}{tail}: {_HINT_AUTH}", url=url, status=status
        )
    if status == 403:
        return XnatAuthError(
            f"{what} failed: XNAT answered 403 (not allowed) at {url}{tail}: ask a project owner "
            "for access",
            url=url,
            status=status,
        )
    if status == 404:
        return XnatNotFoundError(
            f"{what} failed: not found at {url}{tail}: check the name, and that this user may "
            "read the project",
            url=url,
            status=status,
        )
    if status == 409:
        return XnatConflictError(
            f"{what} failed: it already exists at {url}{tail}", url=url, status=status
        )
    if 500 <= status <= 599:
        return XnatTransientError(
            f"{what} failed: XNAT answered {status} at {url}{tail}: retry later",
            url=url,
            status=status,
        )
    return XnatError(
        f"{what} failed: XNAT answered {status} at {url}{tail}", url=url, status=status
    )


def is_transient(error: XnatError) -> bool:
    """Whether a retry may succeed: only :class:`XnatTransientError` qualifies."""
    return isinstance(error, XnatTransientError)
