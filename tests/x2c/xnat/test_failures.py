"""The one translation table from requests/pyxnat failures and HTTP statuses to x2c errors is
complete: every exception class the libraries define maps to a deliberate x2c error."""

from __future__ import annotations

import pytest
import requests
from pyxnat.core import errors as pyxnat_errors

from x2c.errors import (
    XnatAuthError,
    XnatConflictError,
    XnatError,
    XnatNotFoundError,
    XnatTransientError,
)
from x2c.xnat.failures import error_for_exception, error_for_status, is_transient

URL = "https://xnat.example.org/data/projects/P"


def _all_subclasses(root: type) -> set[type]:
    found = {root}
    for sub in root.__subclasses__():
        found |= _all_subclasses(sub)
    return found


# Every requests exception class, with the x2c error it must become. A new class in a future
# requests release fails test_every_requests_exception_is_mapped until it is added here.
REQUESTS_TABLE: dict[str, type[XnatError]] = {
    "RequestException": XnatError,
    "InvalidJSONError": XnatError,
    "JSONDecodeError": XnatError,
    "HTTPError": XnatError,
    "ConnectionError": XnatTransientError,
    "ProxyError": XnatTransientError,
    "SSLError": XnatError,
    "ConnectTimeout": XnatTransientError,
    "Timeout": XnatTransientError,
    "ReadTimeout": XnatTransientError,
    "URLRequired": XnatError,
    "TooManyRedirects": XnatError,
    "MissingSchema": XnatError,
    "InvalidSchema": XnatError,
    "InvalidURL": XnatError,
    "InvalidProxyURL": XnatError,
    "InvalidHeader": XnatError,
    "ChunkedEncodingError": XnatTransientError,
    "ContentDecodingError": XnatTransientError,
    "StreamConsumedError": XnatError,
    "RetryError": XnatTransientError,
    "UnrewindableBodyError": XnatError,
}

PYXNAT_TABLE: dict[str, type[XnatError]] = {
    "Error": XnatError,
    "Warning": XnatError,
    "InterfaceError": XnatError,
    "DatabaseError": XnatError,
    "DataError": XnatError,
    "OperationalError": XnatError,
    "IntegrityError": XnatError,
    "InternalError": XnatError,
    "ProgrammingError": XnatError,
    "NotSupportedError": XnatError,
}


def _instance(cls: type[BaseException]) -> BaseException:
    if cls.__name__ == "JSONDecodeError":
        return cls("Expecting value", "doc", 0)  # type: ignore[call-arg]
    return cls("boom")


def test_every_requests_exception_is_mapped() -> None:
    classes = {
        c for c in _all_subclasses(requests.RequestException) if c.__module__.startswith("requests")
    }
    names = {c.__name__ for c in classes}
    assert names == set(REQUESTS_TABLE), (
        f"update REQUESTS_TABLE: {sorted(names ^ set(REQUESTS_TABLE))}"
    )
    for cls in classes:
        error = error_for_exception(_instance(cls), what="list projects", url=URL)
        assert type(error) is REQUESTS_TABLE[cls.__name__], cls.__name__
        assert "list projects" in str(error) and URL in str(error)
        assert error.url == URL


def test_every_pyxnat_exception_is_mapped() -> None:
    classes = _all_subclasses(pyxnat_errors.Error) | _all_subclasses(pyxnat_errors.Warning)
    assert {c.__name__ for c in classes} == set(PYXNAT_TABLE)
    for cls in classes:
        error = error_for_exception(cls("boom"), what="list", url=URL)
        assert type(error) is PYXNAT_TABLE[cls.__name__], cls.__name__
    login = error_for_exception(
        pyxnat_errors.OperationalError("Authentication failed"), what="list", url=URL
    )
    assert type(login) is XnatAuthError


def test_connection_failures_are_told_apart() -> None:
    dns = requests.ConnectionError(
        "HTTPSConnectionPool: Max retries exceeded (Caused by NameResolutionError(...))"
    )
    refused = requests.ConnectionError("[Errno 111] Connection refused")
    assert type(error_for_exception(dns, what="log in", url=URL)) is XnatError
    assert "host name" in str(error_for_exception(dns, what="log in", url=URL))
    assert type(error_for_exception(refused, what="log in", url=URL)) is XnatTransientError
    tls = error_for_exception(requests.exceptions.SSLError("bad cert"), what="log in", url=URL)
    assert "verify" in str(tls) and not is_transient(tls)


def test_an_unknown_exception_is_still_an_xnat_error() -> None:
    error = error_for_exception(RuntimeError("odd"), what="list", url=URL)
    assert type(error) is XnatError and "RuntimeError" in str(error)


@pytest.mark.parametrize("status", range(400, 600))
def test_every_error_status_is_mapped(status: int) -> None:
    error = error_for_status(status, what="list", url=URL)
    expected: type[XnatError]
    if status in (401, 403):
        expected = XnatAuthError
    elif status == 404:
        expected = XnatNotFoundError
    elif status == 409:
        expected = XnatConflictError
    elif status >= 500:
        expected = XnatTransientError
    else:
        expected = XnatError
    assert type(error) is expected
    assert error.status == status and error.url == URL
    assert is_transient(error) == (status >= 500), "only 5xx are retried, never a 4xx"
