"""Selecting a pipeline's inputs: wildcards, quality, resources, safe paths, clear reasons."""

from __future__ import annotations

import pytest

from tests.x2c.xnat.conftest import Requests
from x2c.errors import NothingToProcessError, XnatNotFoundError
from x2c.selection import InputSelection
from x2c.sources import FileRef
from x2c.xnat import (
    XnatSession,
    experiment_contents,
    list_experiments,
    list_scans,
    select_inputs,
    upload_files,
)
from x2c.xnat.upload import _BytesSource


def _first(session: XnatSession, project: str) -> str:
    return list_experiments(session, project)[0].id


def test_t1_nifti_costs_one_request_per_scan_plus_one(
    session: XnatSession, demo_project: str, server_requests: Requests
) -> None:
    experiment = list_experiments(session, demo_project)[0]
    server_requests.reset()
    chosen = select_inputs(
        session, experiment, InputSelection(scan_types=("t1*",), resource="NIFTI")
    )
    assert server_requests.total() == 1 + len(chosen.scans)
    assert chosen.files and chosen.total_size > 0
    for ref in chosen.files:
        scan = chosen.scans[0]
        assert ref.path.startswith(f"scans/{scan.id}-")
        assert "/NIFTI/" in ref.path and ref.md5 and len(ref.md5) == 32 and ref.size > 0
        assert ref.uri.startswith(f"/data/experiments/{experiment.id}/scans/")


def test_a_document_read_before_costs_the_selection_nothing(
    session: XnatSession, demo_project: str, server_requests: Requests
) -> None:
    """The experiment's document (read once by the pass's check) holds the scans and the
    experiment's resource labels: the selection then lists only the chosen scan's files, and
    an optional experiment resource that is not there costs no request."""
    experiment = list_experiments(session, demo_project)[0]
    server_requests.reset()
    contents = experiment_contents(session, experiment.id)
    assert server_requests.total() == 1
    assert [s.id for s in contents.scans] == [s.id for s in list_scans(session, experiment.id)]
    server_requests.reset()
    wanted = InputSelection(
        scan_types=("t1*",), resource="NIFTI", experiment_resources=("NOT_THERE",)
    )
    chosen = select_inputs(session, experiment, wanted, contents)
    assert server_requests.total() == len(chosen.scans) == 1, server_requests.counts()
    assert chosen.resources == ()
    with pytest.raises(XnatNotFoundError):
        experiment_contents(session, "X2C_NO_SUCH_EXPERIMENT")


def test_wildcards_are_case_insensitive(session: XnatSession, demo_project: str) -> None:
    eid = _first(session, demo_project)
    types = {s.type for s in list_scans(session, eid)}
    t1 = next(t for t in types if t.lower().startswith("t1"))
    for pattern in (t1.upper(), t1.lower(), "*" + t1[1:].lower(), "T?" + t1[2:]):
        assert select_inputs(session, eid, InputSelection(scan_types=(pattern,))).files


def test_nothing_to_process_names_the_reason(session: XnatSession, demo_project: str) -> None:
    experiment = list_experiments(session, demo_project)[0]
    with pytest.raises(
        NothingToProcessError, match=r"no scan of type FLAIR\*, T2\* in session"
    ) as info:
        select_inputs(session, experiment, InputSelection(scan_types=("FLAIR*", "T2*")))
    assert experiment.label in str(info.value) and "types present" in info.value.reason
    with pytest.raises(
        NothingToProcessError,
        match=r"nothing to process, because no scan of type T1\* has a non-empty NOPE resource in"
        r" session",
    ):
        select_inputs(session, experiment, InputSelection(scan_types=("T1*",), resource="NOPE"))
    with pytest.raises(NothingToProcessError, match=r"with quality unusable"):
        select_inputs(
            session, experiment, InputSelection(scan_types=("T1*",), quality=("unusable",))
        )


def test_unknown_experiment_is_not_nothing_to_process(session: XnatSession) -> None:
    with pytest.raises(XnatNotFoundError):
        select_inputs(session, "NO_SUCH_E1", InputSelection(scan_types=("T1*",)))


def test_quality_filter_and_pick(session: XnatSession, demo_project: str) -> None:
    eid = _first(session, demo_project)
    scans = list_scans(session, eid)
    t1 = next(s for s in scans if s.type.lower().startswith("t1"))
    chosen = select_inputs(
        session,
        eid,
        InputSelection(scan_types=("T1*",), quality=(t1.quality.upper(),), pick="first"),
    )
    assert [s.id for s in chosen.scans] == [t1.id]


def test_experiment_resources_and_hostile_file_names(
    session: XnatSession, own_experiments: list[str]
) -> None:
    eid = own_experiments[1]
    hostile = "sub dir/$(touch pwned) 'q'.txt"
    blob = b"earlier result\n"
    upload_files(
        session,
        eid,
        "FREESURFER6",
        [(FileRef(hostile, len(blob), None), _BytesSource(blob))],
        provenance={"pipeline": "fs6"},
        version="6.0",
        on_exists="replace",
    )
    chosen = select_inputs(
        session,
        eid,
        InputSelection(scan_types=("T1*",), experiment_resources=("FREESURFER6", "ABSENT")),
    )
    assert chosen.resources == ("FREESURFER6",)
    paths = {ref.path for ref in chosen.files if ref.path.startswith("resources/")}
    assert paths == {
        "resources/FREESURFER6/provenance.json",
        "resources/FREESURFER6/sub_dir/touch_pwned_q_.txt",
    }
    for path in paths:
        assert ".." not in path.split("/") and not path.startswith("/")
