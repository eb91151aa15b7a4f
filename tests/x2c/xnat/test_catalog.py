"""Listing and looking up experiments: one request each, x2c records out, clean 404s."""

from __future__ import annotations

from typing import Any

import pytest

from tests.x2c.xnat.conftest import Requests, xnat_config
from x2c.errors import XnatNotFoundError
from x2c.xnat import (
    Experiment,
    XnatSession,
    connect,
    find_experiment,
    get_experiment,
    list_experiments,
    list_scans,
)


def test_list_experiments_in_one_request(
    session: XnatSession, demo_project: str, server_requests: Requests
) -> None:
    experiments = list_experiments(session, demo_project)
    assert len(experiments) >= 3
    assert server_requests.total() == 1
    for e in experiments:
        assert isinstance(e, Experiment)
        assert e.id and e.label and e.subject and e.project == demo_project
        assert e.insert_date and e.last_modified
    assert [e.id for e in experiments] == sorted(e.id for e in experiments)


def test_lookup_by_id_and_by_label_in_one_request_each(
    session: XnatSession, demo_project: str, server_requests: Requests
) -> None:
    first = list_experiments(session, demo_project)[0]
    server_requests.reset()
    assert get_experiment(session, first.id) == first
    assert server_requests.total() == 1
    server_requests.reset()
    assert find_experiment(session, demo_project, first.label) == first
    assert server_requests.total() == 1


@pytest.mark.parametrize("name", ["NO_SUCH_E99", "../../etc/passwd", "a b'\"$(id)", "%2e%2e"])
def test_unknown_or_hostile_experiment_is_not_found(
    session: XnatSession, demo_project: str, name: str
) -> None:
    with pytest.raises(XnatNotFoundError, match="no such experiment"):
        get_experiment(session, name)
    with pytest.raises(XnatNotFoundError):
        find_experiment(session, demo_project, name)
    with pytest.raises(XnatNotFoundError, match=r"list scans of experiment"):
        list_scans(session, name)


@pytest.mark.parametrize("project", ["NO_SUCH_PROJECT", "../x", "p q$(id)"])
def test_unknown_project_is_not_found(session: XnatSession, project: str) -> None:
    with pytest.raises(XnatNotFoundError) as info:
        list_experiments(session, project)
    assert info.value.status == 404 and "may read the project" in str(info.value)


def test_unreadable_project_is_not_found(xnat_server: Any, demo_project: str) -> None:
    xnat_server.add_user("outsider", "outsider-pw", projects_readable=[])
    config = xnat_config(xnat_server, user="outsider", password="outsider-pw")
    with connect(config) as other, pytest.raises(XnatNotFoundError):
        list_experiments(other, demo_project)


def test_a_shared_experiment_is_listed_under_its_owner_only(
    session: XnatSession, xnat_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """XNAT lists an experiment shared into a second project with its owning project; x2c
    processes it once, under its owner, and says so."""
    from tests.fixtures.xnat_data import add_session, put

    owner, other = xnat_server.new_project("OWN"), xnat_server.new_project("SHR")
    eid = add_session(xnat_server, owner, "S1", "S1_MR1")
    put(session, "data", "projects", owner, "subjects", "S1", "projects", other)
    put(session, "data", "projects", owner, "subjects", "S1", "experiments", "S1_MR1", "projects",
        other, params={"label": "S1_SHARED"})  # fmt: skip
    assert [e.id for e in list_experiments(session, owner)] == [eid]
    with caplog.at_level("INFO", logger="x2c.xnat"):
        assert list_experiments(session, other) == []
    assert "shared into it" in caplog.text and f"of {owner}" in caplog.text
