"""Test-wide rules: a clean environment for every test, and no skipped test under CI=true."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.podman",
    "tests.fixtures.prefect_stack",
    "tests.fixtures.xnat_server",
]

# Variables a test may rely on; everything else (XNAT_*, PREFECT_*, SSH_AUTH_SOCK, proxies...)
# is removed so that no test depends on the developer's shell.
_KEEP = {
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "VIRTUAL_ENV",
    "PYTHONPATH",
    "CI",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
}


@pytest.fixture(autouse=True)
def clean_environ() -> Iterator[None]:
    """Run each test with only the variables in ``_KEEP``; restore the rest afterwards."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key not in _KEEP and not key.startswith("X2C_TEST"):
            del os.environ[key]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skipped test is a failure: it would hide a missing service."""
    if os.environ.get("CI", "").lower() != "true":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        names = ", ".join(getattr(r, "nodeid", "?") for r in skipped[:10])
        print(f"\nCI=true: {len(skipped)} skipped test(s) count as failures: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
