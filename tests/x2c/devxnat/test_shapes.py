"""devxnat's answers have the keys and shapes of XNAT's (examples in tests/data/xnat/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.xnat_server import XnatServer

DATA = Path(__file__).resolve().parents[2] / "data" / "xnat"
EXP = "/data/experiments/X2C_E00001"


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize(
    ("example", "path"),
    [
        ("projects.json", "/data/projects"),
        ("subjects.json", "/data/projects/DEMO/subjects"),
        ("experiments.json", "/data/projects/DEMO/experiments"),
        ("scans.json", f"{EXP}/scans"),
        ("resources.json", f"{EXP}/scans/1/resources"),
        ("files.json", f"{EXP}/scans/1/resources/NIFTI/files"),
    ],
)
def test_listing_keys_match_xnat(xnat_server: XnatServer, example: str, path: str) -> None:
    expected = _load(example)["ResultSet"]
    resp = requests.get(
        xnat_server.url + path,
        params={"format": "json"},
        auth=(xnat_server.user, xnat_server.password),
        timeout=10,
    )
    got = resp.json()["ResultSet"]
    assert isinstance(got["totalRecords"], str)
    assert int(got["totalRecords"]) == len(got["Result"]) > 0
    for row in got["Result"]:
        assert set(row) == set(expected["Result"][0])
        assert all(isinstance(v, str) for v in row.values())


def test_object_document_shape_matches_xnat(xnat_server: XnatServer) -> None:
    expected = _load("experiment.json")["items"][0]
    got = requests.get(
        xnat_server.url + EXP,
        params={"format": "json"},
        auth=(xnat_server.user, xnat_server.password),
        timeout=10,
    ).json()["items"][0]
    assert set(got) == set(expected)
    assert set(got["meta"]) == set(expected["meta"])
    assert set(expected["data_fields"]) <= set(got["data_fields"])
    scans = next(c for c in got["children"] if c["field"] == "scans/scan")["items"]
    expected_scan = expected["children"][0]["items"][0]
    assert set(expected_scan["data_fields"]) <= set(scans[0]["data_fields"])
    assert scans[0]["meta"]["xsi:type"] == "xnat:mrScanData"
