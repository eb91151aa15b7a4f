"""Unmodified xnatpy (package ``xnat``) against the real ``x2c devxnat`` server."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import xnat

from tests.fixtures.xnat_server import XnatServer


@pytest.fixture
def session(xnat_server: XnatServer) -> Iterator[xnat.session.XNATSession]:
    with xnat.connect(
        xnat_server.url, user=xnat_server.user, password=xnat_server.password, loglevel="ERROR"
    ) as conn:
        yield conn


def test_connect_makes_only_handled_requests(xnat_server: XnatServer) -> None:
    xnat_server.reset_counts()
    log_before = len(xnat_server.log_text())
    with xnat.connect(
        xnat_server.url, user=xnat_server.user, password=xnat_server.password, loglevel="ERROR"
    ) as conn:
        assert conn.logged_in_user == xnat_server.user
        assert conn.xnat_version.startswith("1.8")
    # Every request xnatpy makes to connect, build its model and disconnect is answered.
    assert xnat_server.request_counts() == {
        "GET /": 1,
        "PUT /data/services/auth": 1,
        "GET /data/auth": 1,
        "GET /data/JSESSION": 1,
        "GET /data/version": 1,  # 404, as on XNAT >= 1.7: xnatpy falls back to buildInfo
        "GET /xapi/siteConfig/buildInfo": 1,
        "GET /xapi/schemas": 1,
        "GET /xapi/schemas/{schema}": 1,
        "GET /data/search/elements": 1,
        "GET /data/search/elements/{element}": 6,  # one per data type it publishes
        "DELETE /data/JSESSION": 1,
    }
    assert "unhandled route" not in xnat_server.log_text()[log_before:]


def test_listing_every_level(session: xnat.session.XNATSession) -> None:
    project = session.projects["DEMO"]
    assert project.name == "x2c demo project"
    assert sorted(project.subjects.key_map) == ["DEMO_S001", "DEMO_S002", "DEMO_S003"]
    subject = project.subjects["DEMO_S002"]
    assert subject.id == "X2C_S00002"
    experiment = subject.experiments["DEMO_S002_MR1"]
    assert experiment.id == "X2C_E00002"
    assert experiment.__xsi_type__ == "xnat:mrSessionData"
    assert experiment.subject_id == "X2C_S00002"
    assert sorted(project.experiments.key_map) == [
        "DEMO_S001_MR1",
        "DEMO_S002_MR1",
        "DEMO_S003_MR1",
    ]
    scan = experiment.scans["1"]
    assert scan.type == "T1"
    assert scan.__xsi_type__ == "xnat:mrScanData"
    assert sorted(scan.resources.key_map) == ["DICOM", "NIFTI"]
    nifti = scan.resources["NIFTI"]
    assert nifti.file_count == 1
    assert list(nifti.files.keys()) == ["T1.nii"]
    assert session.experiments["X2C_E00003"].label == "DEMO_S003_MR1"


def test_download_file_and_zip(session: xnat.session.XNATSession, tmp_path: Path) -> None:
    scan = session.experiments["X2C_E00001"].scans["1"]
    target = tmp_path / "t1.nii"
    scan.resources["NIFTI"].files["T1.nii"].download(str(target), verbose=False)
    listed = session.get_json("/data/experiments/X2C_E00001/scans/1/resources/NIFTI/files")[
        "ResultSet"
    ]["Result"][0]
    assert hashlib.md5(target.read_bytes()).hexdigest() == listed["digest"]
    assert target.stat().st_size == int(listed["Size"])

    buf = io.BytesIO()
    session.download_stream(
        "/data/experiments/X2C_E00001/scans/ALL/files", buf, format="zip", verbose=False
    )
    names = sorted(zipfile.ZipFile(buf).namelist())
    assert names == [
        "DEMO_S001_MR1/scans/1-T1/resources/DICOM/files/1-001.dcm",
        "DEMO_S001_MR1/scans/1-T1/resources/DICOM/files/1-002.dcm",
        "DEMO_S001_MR1/scans/1-T1/resources/DICOM/files/1-003.dcm",
        "DEMO_S001_MR1/scans/1-T1/resources/NIFTI/files/T1.nii",
    ]


def test_create_objects_and_upload(
    session: xnat.session.XNATSession, xnat_server: XnatServer, tmp_path: Path
) -> None:
    project_id = xnat_server.new_project()
    session.clearcache()
    project = session.projects[project_id]
    subject = session.classes.SubjectData(parent=project, label="XPY_SUB")
    experiment = session.classes.MrSessionData(parent=subject, label="XPY_SUB_MR1")
    scan = session.classes.MrScanData(parent=experiment, id="7", type="FLAIR")
    resource = session.classes.ResourceCatalog(parent=scan, label="RESULTS", format="ZIP")
    source = tmp_path / "result.txt"
    source.write_bytes(b"hippocampus: 4213 mm3\n")
    resource.upload(str(source), "stats/result.txt")
    resource.clearcache()

    again = session.projects[project_id].subjects["XPY_SUB"].experiments["XPY_SUB_MR1"]
    assert again.scans["7"].type == "FLAIR"
    files = again.scans["7"].resources["RESULTS"].files
    assert list(files.keys()) == ["stats/result.txt"]
    row = session.get_json(f"{again.uri}/scans/7/resources/RESULTS/files")["ResultSet"]["Result"]
    assert row[0]["digest"] == hashlib.md5(source.read_bytes()).hexdigest()
    exp_resource = again.create_resource("FS6_HIPPO")
    exp_resource.upload_data(b"zipped", "out.zip")
    assert "FS6_HIPPO" in session.experiments[again.id].resources.key_map


def test_upload_dir_as_tgz_and_download_dir(
    session: xnat.session.XNATSession, xnat_server: XnatServer, tmp_path: Path
) -> None:
    project_id = xnat_server.new_project()
    session.clearcache()
    subject = session.classes.SubjectData(parent=session.projects[project_id], label="S")
    experiment = session.classes.MrSessionData(parent=subject, label="S_MR1")
    resource = session.classes.ResourceCatalog(parent=experiment, label="UPDIR")
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("a")
    (source / "sub" / "b.txt").write_text("b")
    resource.upload_dir(str(source))  # a .tar.gz uploaded with extract=true
    resource.clearcache()
    assert sorted(resource.files.keys()) == ["a.txt", "sub/b.txt"]

    scan = session.classes.MrScanData(parent=experiment, id="1", type="T1")
    scan_res = session.classes.ResourceCatalog(parent=scan, label="NIFTI")
    scan_res.upload_data(b"nifti bytes", "T1.nii")
    target = tmp_path / "out"
    session.experiments[experiment.id].download_dir(str(target), verbose=False)
    got = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert got == ["S_MR1/scans/1-T1/resources/NIFTI/files/T1.nii"]

    listed = session.experiments[experiment.id].resources["UPDIR"]
    listed.delete()
    session.clearcache()
    assert "UPDIR" not in session.experiments[experiment.id].resources.key_map


def test_paging_through_xnatpy(session: xnat.session.XNATSession) -> None:
    every = session.get_json("/data/experiments", query={"project": "DEMO", "limit": "*"})
    page = session.get_json(
        "/data/experiments", query={"project": "DEMO", "limit": "1", "offset": "1"}
    )
    assert [r["ID"] for r in page["ResultSet"]["Result"]] == [every["ResultSet"]["Result"][1]["ID"]]
    assert len(every["ResultSet"]["Result"]) == 3


def test_query_interface(session: xnat.session.XNATSession) -> None:
    mr = session.classes.MrSessionData
    found = mr.query().filter(mr.project == "DEMO").filter(mr.label.like("%S00_%")).all()
    assert sorted(e.label for e in found) == ["DEMO_S001_MR1", "DEMO_S002_MR1", "DEMO_S003_MR1"]
    assert {e.id for e in found} == {"X2C_E00001", "X2C_E00002", "X2C_E00003"}
    one = mr.query().filter(mr.label == "DEMO_S002_MR1").one()
    assert one.id == "X2C_E00002" and one.subject_id == "X2C_S00002"
    assert mr.query().filter(mr.label == "NO_SUCH_LABEL").one_or_none() is None
