"""devxnat answers as real XNAT servers answered: the responses recorded in public sources
(tests/data/xnat/recorded/, each naming its source) compared key for key with devxnat's answer
to the same request, the envelope, value types and date formats included."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.xnat_server import XnatServer

RECORDED = Path(__file__).resolve().parents[2] / "data" / "xnat" / "recorded"
SESSION = "/data/projects/DEMO/subjects/DEMO_S001/experiments/DEMO_S001_MR1"

# The devxnat request (on its demo data) that matches each recording's request.
LISTINGS = {
    "projects_epad.json": "/data/projects",
    "subjects_project.json": "/data/projects/DEMO/subjects",
    "subjects_rows_meierlab.json": "/data/projects/DEMO/subjects",
    "experiments_subject_mr.json": "/data/projects/DEMO/subjects/DEMO_S001/experiments",
    "experiments_subject_pet_ct.json": "/data/projects/DEMO/subjects/DEMO_S001/experiments",
    "experiments_rows_meierlab.json": "/data/projects/DEMO/subjects/DEMO_S001/experiments",
    "scans_rows_meierlab.json": f"{SESSION}/scans",
}
DOCUMENTS = ["experiment_data_fields_meierlab.json", "experiment_document_xnatpy.json"]

# Value shapes that must be kept wherever a recording shows them.
SHAPES = {
    "date": re.compile(r"\d{4}-\d\d-\d\d"),
    "timestamp": re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{1,3}"),
    "uri": re.compile(r"/data/\S+"),
    "integer": re.compile(r"\d+"),
    "java date": re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d [A-Z]{3,4} \d{4}"),
}

# Fields a session document carries only when it was built from DICOM headers (or the
# prearchive); devxnat's sessions are not, so it may leave them out, as XNAT leaves out unset
# fields.
DICOM_DERIVED = {
    "UID",
    "dcmPatientId",
    "dcmPatientName",
    "fieldStrength",
    "prearchivePath",
    "scanner/manufacturer",
    "scanner/model",
    "session_type",
    "time",
}


def _recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDED / name).read_text())
    return data


def _shape(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return next((name for name, rx in SHAPES.items() if rx.fullmatch(value)), None)


def _get(server: XnatServer, path: str) -> Any:
    resp = requests.get(
        server.url + path,
        params={"format": "json"},
        auth=(server.user, server.password),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


def _same_values(where: str, recorded: dict[str, Any], got: dict[str, Any]) -> None:
    for key, value in recorded.items():
        if key not in got:
            continue
        assert type(got[key]) is type(value), f"{where}: {key} is {got[key]!r}, recorded {value!r}"
        shape = _shape(value)
        if shape is not None and got[key] != "":
            assert _shape(got[key]) == shape, f"{where}: {key}={got[key]!r} is not a {shape}"


def test_every_recording_is_compared() -> None:
    on_disk = {p.name for p in RECORDED.glob("*.json")}
    assert on_disk == set(LISTINGS) | set(DOCUMENTS)
    for name in on_disk:
        source = _recorded(name)["source"]
        assert source["repository"] and source["path"] and source["commit"], name


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_listing_matches_recording(xnat_server: XnatServer, name: str) -> None:
    recorded = _recorded(name)["body"]
    got = _get(xnat_server, LISTINGS[name])
    assert set(got) == set(recorded) == {"ResultSet"}
    rec_set, got_set = recorded["ResultSet"], got["ResultSet"]
    if "totalRecords" in rec_set:  # the source kept the whole envelope
        assert set(got_set) == set(rec_set)
        assert type(got_set["totalRecords"]) is type(rec_set["totalRecords"])
    assert int(got_set["totalRecords"]) == len(got_set["Result"]) > 0
    expected_keys = set(rec_set["Result"][0])
    for rec_row in rec_set["Result"]:
        assert set(rec_row) == expected_keys, f"{name}: recorded rows differ"
    for row in got_set["Result"]:
        assert set(row) == expected_keys, f"{name}: {sorted(set(row) ^ expected_keys)}"
        for rec_row in rec_set["Result"]:
            _same_values(name, rec_row, row)


@pytest.mark.parametrize("name", DOCUMENTS)
def test_session_document_matches_recording(xnat_server: XnatServer, name: str) -> None:
    recorded = _recorded(name)["body"]
    got = _get(xnat_server, SESSION)
    assert set(got) == set(recorded) == {"items"}
    assert len(got["items"]) == 1
    rec_item, item = recorded["items"][0], got["items"][0]
    assert set(rec_item) <= set(item) == {"children", "meta", "data_fields"}
    if "meta" in rec_item:
        assert set(item["meta"]) == set(rec_item["meta"])
        _same_values(f"{name} meta", rec_item["meta"], item["meta"])
        assert item["meta"]["xsi:type"] == rec_item["meta"]["xsi:type"]
    rec_fields, fields = rec_item["data_fields"], item["data_fields"]
    missing = set(rec_fields) - DICOM_DERIVED - set(fields)
    assert not missing, f"{name}: devxnat's session lacks {sorted(missing)}"
    _same_values(f"{name} data_fields", rec_fields, fields)
    assert fields["id"] == fields["ID"]
