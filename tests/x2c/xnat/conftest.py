"""Fixtures for the XNAT layer: a logged-in session on the devxnat server, its demo project,
and a request counter that reads the server's own count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.xnat_data import Requests, add_session, put, xnat_config
from x2c.xnat import XnatSession, connect


@pytest.fixture
def server_requests(xnat_server: Any) -> Requests:
    counter = Requests(xnat_server)
    counter.reset()
    return counter


@pytest.fixture
def session(xnat_server: Any) -> Iterator[XnatSession]:
    with connect(xnat_config(xnat_server)) as s:
        yield s


@pytest.fixture
def demo_project(session: XnatSession) -> str:
    """The devxnat demo project (read-only here), checked to be visible."""
    rows = session.result_set("/data/projects", what="list projects")
    assert "DEMO" in {row["ID"] for row in rows}, "the devxnat server has no DEMO project"
    return "DEMO"


OWN_PROJECT = "X2C_XNAT_LAYER"


@pytest.fixture(scope="session")
def own_experiments(xnat_server: Any) -> list[str]:
    """Two experiments in a project of this test package's own, each with scan 1 (type T1)
    holding a NIFTI resource with one file; the tests that write results use these, never the
    shared DEMO data."""
    with connect(xnat_config(xnat_server)) as s:
        put(s, "data", "projects", OWN_PROJECT)
    return [
        add_session(
            xnat_server, OWN_PROJECT, f"XL_S{n}", f"XL_S{n}_MR1", body=bytes(range(256)) * (400 + n)
        )
        for n in (1, 2)
    ]
