"""Which errors x2c tasks retry: transient ones only, also when wrapped."""

from __future__ import annotations

import pytest

from tasks.common import is_transient
from x2c.errors import (
    HostKeyError,
    JobFailedError,
    NothingToProcessError,
    SSHAuthError,
    SSHConnectError,
    XnatAuthError,
    XnatTransientError,
)


@pytest.mark.parametrize(
    "exc",
    [SSHConnectError("lost", host="hpc"), XnatTransientError("503", url="http://x/data")],
)
def test_transient_errors_are_retried(exc: Exception) -> None:
    assert is_transient(exc)
    wrapper = RuntimeError("while staging")
    wrapper.__cause__ = exc
    assert is_transient(wrapper)


@pytest.mark.parametrize(
    "exc",
    [
        JobFailedError("job 1 failed", job_id="1", state="FAILED", exit_code=3),
        NothingToProcessError("no T1 scan"),
        SSHAuthError("denied", host="hpc"),
        HostKeyError("changed", host="hpc"),
        XnatAuthError("401", url="http://x/data", status=401),
        ValueError("a bug"),
        None,
    ],
)
def test_everything_else_is_not(exc: Exception | None) -> None:
    assert not is_transient(exc)
