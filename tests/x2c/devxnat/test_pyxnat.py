"""Unmodified pyxnat against the real ``x2c devxnat`` server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyxnat import Interface

from tests.fixtures.xnat_server import XnatServer


@pytest.fixture
def intf(xnat_server: XnatServer) -> Iterator[Interface]:
    interface = Interface(
        server=xnat_server.url, user=xnat_server.user, password=xnat_server.password
    )
    yield interface
    interface.disconnect()


def test_config_file_connects(xnat_server: XnatServer, tmp_path: Path) -> None:
    cfg = tmp_path / "xnat.cfg"
    config = {"server": xnat_server.url, "user": xnat_server.user, "password": xnat_server.password}
    cfg.write_text(json.dumps(config))
    interface = Interface(config=str(cfg))
    try:
        assert "DEMO" in interface.select.projects().get()
    finally:
        interface.disconnect()


def test_listing_every_level(intf: Interface) -> None:
    project = intf.select.project("DEMO")
    assert project.exists()
    assert project.subjects().get() == ["X2C_S00001", "X2C_S00002", "X2C_S00003"]
    experiment = project.subject("DEMO_S001").experiment("DEMO_S001_MR1")
    assert experiment.exists()
    assert experiment.id() == "X2C_E00001"
    assert experiment.label() == "DEMO_S001_MR1"
    assert experiment.scans().get() == ["1"]
    assert sorted(experiment.scan("1").resources().get("label")) == ["1", "2"]
    files = experiment.scan("1").resource("DICOM").files().get()
    assert files == ["1-001.dcm", "1-002.dcm", "1-003.dcm"]
    assert intf.select("/projects/DEMO/experiments").get() == [
        "X2C_E00001",
        "X2C_E00002",
        "X2C_E00003",
    ]
    assert not intf.select.project("NOPE").exists()


def test_file_attributes_and_download(intf: Interface, tmp_path: Path) -> None:
    f = intf.select(
        "/projects/DEMO/subjects/DEMO_S003/experiments/DEMO_S003_MR1"
        "/scans/1/resources/NIFTI/files/T1.nii"
    )
    attrs = f.attributes()
    dest = f.get(str(tmp_path / "T1.nii"))
    data = Path(dest).read_bytes()
    assert attrs["digest"] == hashlib.md5(data).hexdigest()
    assert int(attrs["Size"]) == len(data) == 65888


def test_resource_zip_download(intf: Interface, tmp_path: Path) -> None:
    # pyxnat downloads ?format=zip, then moves each entry from below its ".../files/" level
    # into <dest>/<resource>/: this only works with XNAT's entry layout.
    resource = intf.select(
        "/projects/DEMO/subjects/DEMO_S002/experiments/DEMO_S002_MR1/scans/1/resources/DICOM"
    )
    members = resource.get(str(tmp_path), extract=True)
    assert sorted(Path(m).relative_to(tmp_path).as_posix() for m in members) == [
        f"DICOM/1-00{n}.dcm" for n in (1, 2, 3)
    ]
    assert (tmp_path / "DICOM" / "1-002.dcm").read_bytes().startswith(b"\0" * 128 + b"DICM")


def test_create_and_upload(intf: Interface, xnat_server: XnatServer, tmp_path: Path) -> None:
    subject = intf.select.project(xnat_server.new_project()).subject("PYX_SUB")
    subject.create()
    experiment = subject.experiment("PYX_SUB_MR1")
    experiment.create()
    scan = experiment.scan("3")
    scan.create(scans="xnat:mrScanData")
    resource = scan.resource("OUT")
    resource.create()
    source = tmp_path / "stats.txt"
    source.write_bytes(b"volume 1234\n" * 1000)
    resource.file("stats/stats.txt").put(str(source))
    # pyxnat names files by the last URI segment; the path below the resource is kept.
    assert resource.files().get() == ["stats.txt"]
    attrs = resource.file("stats/stats.txt").attributes()
    assert attrs["digest"] == hashlib.md5(source.read_bytes()).hexdigest()


def test_version_falls_back_to_build_info(intf: Interface) -> None:
    # /data/version is 404 on XNAT 1.7+; pyxnat must parse that error page and fall back.
    assert intf.version()["version"].startswith("1.8")


def test_put_many_files_extracts_zip_then_delete(
    intf: Interface, xnat_server: XnatServer, tmp_path: Path
) -> None:
    project = xnat_server.new_project()
    resource = intf.select(f"/projects/{project}/subjects/S/experiments/S_MR1/resources/PZ")
    sources = []
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(name)
        sources.append(str(tmp_path / name))
    resource.put(sources)  # zips them, POSTs ?extract=true, the server unpacks
    assert sorted(resource.files().get()) == ["a.txt", "b.txt", "c.txt"]
    resource.file("a.txt").delete()
    assert sorted(resource.files().get()) == ["b.txt", "c.txt"]
    resource.delete()
    assert not resource.exists()
    assert intf.select(f"/projects/{project}/subjects/S/experiments/S_MR1").exists()


def test_attrs_set_and_get(intf: Interface, xnat_server: XnatServer) -> None:
    project = xnat_server.new_project()
    experiment = intf.select(f"/projects/{project}/subjects/S/experiments/S_MR1")
    experiment.create()
    before = experiment.attrs.get("xnat:mrSessionData/last_modified")
    experiment.attrs.set("xnat:mrSessionData/date", "2024-02-03")
    experiment.attrs.mset({"xnat:mrSessionData/note": "re-scanned"})
    assert experiment.attrs.get("xnat:mrSessionData/date") == "2024-02-03"
    assert experiment.attrs.mget(["xnat:mrSessionData/note", "xnat:mrSessionData/label"]) == [
        "re-scanned",
        "S_MR1",
    ]
    assert experiment.attrs.get("xnat:mrSessionData/last_modified") >= before


def _mixed_project(intf: Interface, xnat_server: XnatServer) -> str:
    """A fresh project whose subject S has an MR session (two scans) and a PET session."""
    project = xnat_server.new_project()
    subject = intf.select.project(project).subject("S")
    subject.create()
    mr = subject.experiment("S_MR1")
    mr.create(experiments="xnat:mrSessionData")
    mr.scan("1").create(scans="xnat:mrScanData")
    mr.scan("2").create(scans="xnat:mrScanData")
    subject.experiment("S_PET1").create(experiments="xnat:petSessionData")
    return project


def test_array_experiments_follows_the_type_hierarchy(
    intf: Interface, xnat_server: XnatServer
) -> None:
    project = _mixed_project(intf, xnat_server)
    # Sends ?xsiType=xnat:subjectAssessorData: every session type extends it.
    table = intf.array.experiments(project_id=project, columns=["label", "xsiType"])
    assert sorted((r["label"], r["xsiType"]) for r in table.data) == [
        ("S_MR1", "xnat:mrSessionData"),
        ("S_PET1", "xnat:petSessionData"),
    ]
    assert {r["project"] for r in table.data} == {project}
    assert all(r["subject_ID"] and r["xnat:subjectassessordata/id"] == r["ID"] for r in table)
    assert [r["label"] for r in intf.array.mrsessions(project_id=project, columns=["label"])] == [
        "S_MR1"
    ]
    pet = intf.array.experiments(project_id=project, experiment_type="xnat:petSessionData")
    assert [r["xnat:petsessiondata/id"] for r in pet.data] == [r["ID"] for r in pet.data]
    assert len(pet.data) == 1


def test_array_scans_answers_one_row_per_scan(intf: Interface, xnat_server: XnatServer) -> None:
    project = _mixed_project(intf, xnat_server)
    scans = intf.array.scans(project_id=project)
    assert sorted(r["xnat:imagescandata/id"] for r in scans.data) == ["1", "2"]
    mr_scans = intf.array.mrscans(project_id=project, columns=["xnat:mrScanData/type"])
    assert sorted(r["xnat:mrscandata/id"] for r in mr_scans.data) == ["1", "2"]


def test_paging_through_pyxnat(intf: Interface) -> None:
    pages = [
        intf.get(
            "/data/projects/DEMO/experiments",
            params={"format": "json", "limit": "2", "offset": str(offset)},
        ).json()["ResultSet"]["Result"]
        for offset in (0, 2)
    ]
    assert [[r["label"] for r in p] for p in pages] == [
        ["DEMO_S001_MR1", "DEMO_S002_MR1"],
        ["DEMO_S003_MR1"],
    ]


def test_search_where(intf: Interface) -> None:
    columns = ["xnat:mrSessionData/LABEL", "xnat:mrSessionData/PROJECT", "xnat:subjectData/LABEL"]
    table = intf.select("xnat:mrSessionData", columns).where(
        [
            ("xnat:mrSessionData/PROJECT", "=", "DEMO"),
            [
                ("xnat:mrSessionData/LABEL", "LIKE", "*S002*"),
                ("xnat:subjectData/LABEL", "=", "DEMO_S003"),
                "OR",
            ],
            "AND",
        ]
    )
    assert sorted((r["label"], r["project"], r["xnat_subjectdata_label"]) for r in table) == [
        ("DEMO_S002_MR1", "DEMO", "DEMO_S002"),
        ("DEMO_S003_MR1", "DEMO", "DEMO_S003"),
    ]
    everything = intf.select("xnat:imageSessionData", ["xnat:imageSessionData/LABEL"]).all()
    assert {"DEMO_S001_MR1", "DEMO_S002_MR1", "DEMO_S003_MR1"} <= {r["label"] for r in everything}


def test_search_refuses_what_it_cannot_answer(intf: Interface) -> None:
    search = intf.select("xnat:mrSessionData", ["xnat:mrSessionData/LABEL"])
    with pytest.raises(Exception, match="not supported"):
        search.where([("xnat:mrSessionData/AGE", ">", "40"), "AND"])


def test_share_and_unshare_a_subject(intf: Interface, xnat_server: XnatServer) -> None:
    owner, other = xnat_server.new_project("OWN"), xnat_server.new_project("SHR")
    subject = intf.select.project(owner).subject("S1")
    subject.create()
    subject.share(other)
    assert sorted(subject.shares().get()) == sorted([owner, other])
    shared = intf.select.project(other).subject("S1")
    assert shared.exists() and shared.attrs.get("project") == owner
    subject.unshare(other)
    assert not intf.select.project(other).subject("S1").exists()
