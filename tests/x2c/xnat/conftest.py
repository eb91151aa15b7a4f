"""Fixtures for the XNAT layer: a logged-in session on the devxnat server, its demo project,
and a request counter that reads the server's own count."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from x2c.config import XnatConfig
from x2c.xnat import XnatSession, connect


def xnat_config(server: Any, **fields: Any) -> XnatConfig:
    """An XnatConfig for ``server`` with quick retries, overridable per test."""
    base: dict[str, Any] = {"timeout": 10.0, "retries": 2, "backoff_s": 0.01, "backoff_max_s": 0.05}
    base.update(fields)
    url = base.pop("url", server.url)
    user = base.pop("user", server.user)
    password = base.pop("password", server.password)
    return XnatConfig(url=url, user=user, password=SecretStr(password), **base)


class Requests:
    """Counts what the server saw since the last :meth:`reset`, by ``METHOD template``."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def reset(self) -> None:
        self._server.reset_counts()

    def counts(self) -> dict[str, int]:
        return {
            k: v
            for k, v in self._server.request_counts().items()
            if not k.startswith(("GET /x2c", "DELETE /x2c"))
        }

    def total(self) -> int:
        return sum(self.counts().values())


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


def _put(
    session: XnatSession,
    *segments: str,
    params: dict[str, str] | None = None,
    body: bytes | None = None,
) -> str:
    from x2c.xnat import path_of

    response = session.request(
        "PUT",
        path_of(*segments),
        what="set up test data",
        params=params,
        body=(lambda: body) if body is not None else None,
        accept=(200, 201),
    )
    return response.text.strip()


@pytest.fixture(scope="session")
def own_experiments(xnat_server: Any) -> list[str]:
    """Two experiments in a project of this test package's own, each with scan 1 (type T1)
    holding a NIFTI resource with one file; the tests that write results use these, never the
    shared DEMO data."""
    with connect(xnat_config(xnat_server)) as s:
        _put(s, "data", "projects", OWN_PROJECT)
        ids = []
        for n in (1, 2):
            subject = f"XL_S{n}"
            _put(s, "data", "projects", OWN_PROJECT, "subjects", subject)
            eid = _put(
                s,
                "data",
                "projects",
                OWN_PROJECT,
                "subjects",
                subject,
                "experiments",
                f"{subject}_MR1",
                params={"xsiType": "xnat:mrSessionData"},
            )
            _put(
                s,
                "data",
                "experiments",
                eid,
                "scans",
                "1",
                params={"xsiType": "xnat:mrScanData", "type": "T1", "quality": "usable"},
            )
            _put(s, "data", "experiments", eid, "scans", "1", "resources", "NIFTI")
            _put(
                s,
                "data",
                "experiments",
                eid,
                "scans",
                "1",
                "resources",
                "NIFTI",
                "files",
                "T1.nii",
                params={"inbody": "true"},
                body=bytes(range(256)) * (400 + n),
            )
            ids.append(eid)
        return ids
