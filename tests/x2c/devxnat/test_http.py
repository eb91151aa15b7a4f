"""The server's REST behaviour seen with plain HTTP: auth, listings, errors, uploads, archives."""

from __future__ import annotations

import csv
import hashlib
import io
import signal
import tarfile
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fixtures.xnat_server import XnatServer

EXP1 = "/data/projects/DEMO/subjects/DEMO_S001/experiments/DEMO_S001_MR1"


@pytest.fixture
def http(xnat_server: XnatServer) -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.auth = (xnat_server.user, xnat_server.password)
        yield session


def _url(server: XnatServer, path: str) -> str:
    return server.url + path


def _result(resp: requests.Response) -> list[dict[str, str]]:
    assert resp.status_code == 200, resp.text
    rows: list[dict[str, str]] = resp.json()["ResultSet"]["Result"]
    return rows


def _new_resource(http: requests.Session, server: XnatServer, label: str = "OUT") -> str:
    """A fresh project/subject/experiment with an empty experiment resource; its URI."""
    project = server.new_project()
    base = f"/data/projects/{project}/subjects/SUB1"
    assert http.put(_url(server, base)).status_code == 201
    exp = f"{base}/experiments/SUB1_MR1"
    assert http.put(_url(server, exp), params={"xsiType": "xnat:mrSessionData"}).status_code == 201
    res = f"{exp}/resources/{label}"
    assert http.put(_url(server, res)).status_code == 200
    return res


# -- authentication -------------------------------------------------------------------------


def test_requests_without_or_with_wrong_credentials_get_401(xnat_server: XnatServer) -> None:
    for auth in (None, (xnat_server.user, "wrong"), ("nobody", "x")):
        resp = requests.get(_url(xnat_server, "/data/projects"), auth=auth, timeout=10)
        assert resp.status_code == 401
        assert resp.text.startswith("<html>")
    bad = requests.put(
        _url(xnat_server, "/data/services/auth"),
        data={"username": xnat_server.user, "password": "wrong"},
        timeout=10,
    )
    assert bad.status_code == 401


def test_jsession_cookie_authenticates_until_deleted(xnat_server: XnatServer) -> None:
    token = requests.get(
        _url(xnat_server, "/data/JSESSION"),
        auth=(xnat_server.user, xnat_server.password),
        timeout=10,
    ).text
    assert len(token) == 32
    with requests.Session() as anon:
        anon.cookies.set("JSESSIONID", token)
        assert anon.get(_url(xnat_server, "/data/auth")).text == (
            f"User '{xnat_server.user}' is logged in"
        )
        assert anon.delete(_url(xnat_server, "/data/JSESSION")).status_code == 200
        assert anon.get(_url(xnat_server, "/data/projects")).status_code == 401
    login = requests.put(
        _url(xnat_server, "/data/services/auth"),
        data={"username": xnat_server.user, "password": xnat_server.password},
        timeout=10,
    )
    assert login.status_code == 200
    assert login.cookies["JSESSIONID"] == login.text


def test_version_routes_look_like_xnat_1_8(http: requests.Session, xnat_server: XnatServer) -> None:
    assert http.get(_url(xnat_server, "/data/version")).status_code == 404
    assert (
        http.get(_url(xnat_server, "/xapi/siteConfig/buildInfo"))
        .json()["version"]
        .startswith("1.8")
    )
    assert http.get(_url(xnat_server, "/xapi/schemas")).json() == ["xnat"]
    assert "<xs:schema" in http.get(_url(xnat_server, "/xapi/schemas/xnat")).text


# -- listings -------------------------------------------------------------------------------


def test_listings_at_every_level_and_aliases(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    for prefix in ("/data", "/data/archive", "/REST"):
        rows = _result(http.get(_url(xnat_server, f"{prefix}/projects"), params={"format": "json"}))
        assert "DEMO" in {r["ID"] for r in rows}
    subjects = _result(http.get(_url(xnat_server, "/data/projects/DEMO/subjects")))
    assert [s["label"] for s in subjects] == ["DEMO_S001", "DEMO_S002", "DEMO_S003"]
    assert all(isinstance(v, str) for s in subjects for v in s.values())
    exps = _result(
        http.get(_url(xnat_server, "/data/projects/DEMO/subjects/DEMO_S002/experiments"))
    )
    assert [e["ID"] for e in exps] == ["X2C_E00002"]
    scans = _result(http.get(_url(xnat_server, f"{EXP1}/scans")))
    assert [(s["ID"], s["type"], s["xsiType"]) for s in scans] == [("1", "T1", "xnat:mrScanData")]
    resources = _result(http.get(_url(xnat_server, f"{EXP1}/scans/1/resources")))
    assert [r["label"] for r in resources] == ["NIFTI", "DICOM"]
    assert "URI" not in resources[0] and "ID" not in resources[0]
    assert resources[0]["file_count"] == "1" and resources[0]["file_size"] == "65888"
    files = _result(http.get(_url(xnat_server, f"{EXP1}/scans/1/resources/DICOM/files")))
    assert [f["Name"] for f in files] == ["1-001.dcm", "1-002.dcm", "1-003.dcm"]
    for f in files:
        body = http.get(_url(xnat_server, f["URI"])).content
        assert hashlib.md5(body).hexdigest() == f["digest"]
        assert len(body) == int(f["Size"])


def test_columns_rename_xpaths_and_keep_uri_and_root_id(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    rows = _result(
        http.get(
            _url(xnat_server, "/data/projects/DEMO/experiments"),
            params={
                "format": "json",
                "columns": "ID,label,xnat:subjectAssessorData/subject_id,last_modified,insert_date",
            },
        )
    )
    # An xpath with a shortcut is answered under the shortcut (pyxnat reads "subject_ID"); the
    # URI and the root type's xpath copy of the ID are always added.
    assert set(rows[0]) == {
        "ID",
        "label",
        "subject_ID",
        "last_modified",
        "insert_date",
        "URI",
        "xnat:subjectassessordata/id",
    }
    assert rows[0]["subject_ID"] == "X2C_S00001"
    for stamp in (rows[0]["last_modified"], rows[0]["insert_date"]):
        time.strptime(stamp.split(".")[0], "%Y-%m-%d %H:%M:%S")
        assert len(stamp.split(".")[1]) == 3


def test_csv_listing(http: requests.Session, xnat_server: XnatServer) -> None:
    resp = http.get(
        _url(xnat_server, "/data/projects/DEMO/subjects"),
        params={"format": "csv", "columns": "ID,label"},
    )
    assert resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [(r["ID"], r["label"]) for r in rows][:1] == [("X2C_S00001", "DEMO_S001")]
    assert set(rows[0]) == {"ID", "label", "URI"}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"xsiType": "xnat:mrSessionData", "project": "DEMO"}, 3),
        ({"project": "DEMO", "label": "DEMO_S00*_MR1"}, 3),
        ({"project": "DEMO", "label": "*S002*"}, 1),
        ({"project": "DEMO", "ID": "X2C_E00001,X2C_E00003"}, 2),
        ({"project": "DEMO", "xsiType": "xnat:petSessionData"}, 0),
        ({"project": "NOPE"}, 0),
    ],
)
def test_global_experiment_filters(
    http: requests.Session, xnat_server: XnatServer, query: dict[str, str], expected: int
) -> None:
    rows = _result(http.get(_url(xnat_server, "/data/experiments"), params=query))
    assert len(rows) == expected


def test_object_document_and_catalog(http: requests.Session, xnat_server: XnatServer) -> None:
    doc = http.get(_url(xnat_server, "/data/experiments/X2C_E00001"), params={"format": "json"})
    item = doc.json()["items"][0]
    assert item["meta"]["xsi:type"] == "xnat:mrSessionData"
    assert item["data_fields"]["label"] == "DEMO_S001_MR1"
    catalog = http.get(_url(xnat_server, f"{EXP1}/scans/1/resources/NIFTI"))
    assert catalog.text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<cat:Catalog')
    assert 'URI="T1.nii"' in catalog.text


def test_zip_downloads_use_xnat_layout(http: requests.Session, xnat_server: XnatServer) -> None:
    whole = http.get(_url(xnat_server, f"{EXP1}/scans/ALL/files"), params={"format": "zip"})
    names = sorted(zipfile.ZipFile(io.BytesIO(whole.content)).namelist())
    assert names[-1] == "DEMO_S001_MR1/scans/1-T1/resources/NIFTI/files/T1.nii"
    assert len(names) == 4
    by_type = http.get(_url(xnat_server, f"{EXP1}/scans/T1/files"), params={"format": "zip"})
    assert sorted(zipfile.ZipFile(io.BytesIO(by_type.content)).namelist()) == names
    one = http.get(
        _url(xnat_server, f"{EXP1}/scans/1/resources/NIFTI/files"), params={"format": "zip"}
    )
    with zipfile.ZipFile(io.BytesIO(one.content)) as zf:
        assert zf.namelist() == ["DEMO_S001_MR1/scans/1-T1/resources/NIFTI/files/T1.nii"]
        data = zf.read(zf.namelist()[0])
    listed = _result(http.get(_url(xnat_server, f"{EXP1}/scans/1/resources/NIFTI/files")))[0]
    assert hashlib.md5(data).hexdigest() == listed["digest"]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/data/projects/NOPE",
        "/data/projects/NOPE/subjects",
        "/data/projects/DEMO/subjects/NOPE",
        "/data/experiments/X2C_E99999",
        f"{EXP1}/scans/99",
        f"{EXP1}/scans/1/resources/NOPE/files",
        f"{EXP1}/scans/1/resources/NIFTI/files/nope.nii",
        f"{EXP1}/scans/1/resources/NIFTI/files/../../../../index.json",
        "/data/nothing/here",
    ],
)
def test_missing_objects_are_404_html(
    http: requests.Session, xnat_server: XnatServer, path: str
) -> None:
    resp = http.get(_url(xnat_server, path))
    assert resp.status_code == 404
    assert resp.text.startswith("<html>")


def test_permissions_404_for_unreadable_403_for_readonly(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    resource = _new_resource(http, xnat_server)
    project = resource.split("/")[3]
    xnat_server.add_user("reader", "reader-pw", [project], can_write=False)
    xnat_server.add_user("outsider", "outsider-pw", [], can_write=True)
    reader = ("reader", "reader-pw")
    outsider = ("outsider", "outsider-pw")

    assert requests.get(_url(xnat_server, resource), auth=reader, timeout=10).status_code == 200
    projects = _result(requests.get(_url(xnat_server, "/data/projects"), auth=reader, timeout=10))
    assert [p["ID"] for p in projects] == [project]
    assert requests.get(_url(xnat_server, resource), auth=outsider, timeout=10).status_code == 404
    assert (
        requests.get(_url(xnat_server, f"/data/projects/{project}"), auth=outsider, timeout=10)
    ).status_code == 404
    assert (
        _result(requests.get(_url(xnat_server, "/data/experiments"), auth=outsider, timeout=10))
        == []
    )

    put = requests.put(
        _url(xnat_server, f"{resource}/files/x.txt"), data=b"x", auth=reader, timeout=10
    )
    assert put.status_code == 403
    assert (
        requests.put(_url(xnat_server, f"{resource}2"), auth=reader, timeout=10).status_code == 403
    )
    assert requests.delete(_url(xnat_server, resource), auth=reader, timeout=10).status_code == 403
    assert (
        requests.put(_url(xnat_server, "/data/projects/MINE"), auth=reader, timeout=10).status_code
        == 403
    )
    assert (
        requests.get(_url(xnat_server, "/x2c/requests"), auth=reader, timeout=10).status_code == 403
    )


def test_existing_resource_is_409(http: requests.Session, xnat_server: XnatServer) -> None:
    resource = _new_resource(http, xnat_server)
    again = http.put(_url(xnat_server, resource))
    assert again.status_code == 409
    assert "Specified resource already exists." in again.text


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("PUT", "/data/projects/bad%20id", {}),
        ("PUT", "/data/projects/DEMO/subjects/S/experiments/E", {"params": {"xsiType": "x"}}),
        ("PUT", "/data/projects/DEMO/experiments/ORPHAN", {}),
        ("POST", f"{EXP1}/scans/1/resources/NIFTI/files", {"data": b"raw without a name"}),
        ("PUT", f"{EXP1}/scans/1/resources/NIFTI/files/../escape.txt", {"data": b"x"}),
        ("GET", "/data/projects?format=json&columns=%ff%fe", {}),
        ("PUT", "/x2c/users/someone", {"data": b"not json"}),
    ],
)
def test_bad_requests_change_nothing(
    http: requests.Session,
    xnat_server: XnatServer,
    method: str,
    path: str,
    kwargs: dict[str, object],
) -> None:
    before = (xnat_server.data_dir / "index.json").read_bytes()
    resp = http.request(method, _url(xnat_server, path), **kwargs)  # type: ignore[arg-type]
    assert resp.status_code in (200, 400, 404), resp.text
    if resp.status_code != 200:
        assert (xnat_server.data_dir / "index.json").read_bytes() == before
    assert http.get(_url(xnat_server, "/data/projects/DEMO")).status_code == 200


# -- uploads --------------------------------------------------------------------------------


def _files(http: requests.Session, server: XnatServer, resource: str) -> dict[str, dict[str, str]]:
    rows = _result(http.get(_url(server, f"{resource}/files")))
    return {r["URI"].split("/files/", 1)[1]: r for r in rows}


def test_upload_styles_and_digests(http: requests.Session, xnat_server: XnatServer) -> None:
    resource = _new_resource(http, xnat_server)
    exp = resource.rsplit("/resources/", 1)[0]
    before = _result(
        http.get(
            _url(xnat_server, f"{exp.rsplit('/experiments/', 1)[0]}/experiments"),
            params={"columns": "ID,last_modified"},
        )
    )[0]["last_modified"]
    raw = b"pyxnat style\n" * 100
    # pyxnat: POST with the bytes as the body and inbody=true
    assert (
        http.post(
            _url(xnat_server, f"{resource}/files/a/raw.txt"),
            params={"inbody": "true", "format": "TXT", "content": "U", "tags": "U"},
            data=raw,
        ).status_code
        == 200
    )
    # xnatpy: PUT application/octet-stream
    assert (
        http.put(
            _url(xnat_server, f"{resource}/files/put.bin"),
            data=b"\x00\x01" * 5000,
            headers={"Content-Type": "application/octet-stream"},
        ).status_code
        == 200
    )
    # browsers and curl -F: multipart/form-data
    assert (
        http.post(
            _url(xnat_server, f"{resource}/files"), files={"file": ("multi.txt", b"multipart body")}
        ).status_code
        == 200
    )
    files = _files(http, xnat_server, resource)
    assert sorted(files) == ["a/raw.txt", "multi.txt", "put.bin"]
    assert files["a/raw.txt"]["digest"] == hashlib.md5(raw).hexdigest()
    assert files["a/raw.txt"]["file_format"] == "TXT"
    assert files["multi.txt"]["Size"] == str(len(b"multipart body"))
    after = _result(
        http.get(
            _url(xnat_server, f"{exp.rsplit('/experiments/', 1)[0]}/experiments"),
            params={"columns": "ID,last_modified"},
        )
    )[0]["last_modified"]
    assert after > before


def test_overwrite_and_duplicates(http: requests.Session, xnat_server: XnatServer) -> None:
    resource = _new_resource(http, xnat_server)
    url = _url(xnat_server, f"{resource}/files/same.txt")
    assert http.put(url, data=b"first").status_code == 200
    dup = http.put(url, data=b"second")
    assert dup.status_code == 200
    assert dup.json() == {"duplicates": ["same.txt"]}
    assert http.get(url).content == b"first"
    assert http.put(url, data=b"third", params={"overwrite": "true"}).status_code == 200
    assert http.get(url).content == b"third"
    assert http.delete(url).status_code == 200
    assert http.get(url).status_code == 404
    assert http.delete(_url(xnat_server, resource)).status_code == 200
    assert http.get(_url(xnat_server, resource)).status_code == 404


def test_a_file_put_creates_its_missing_resource(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    """XNAT's file upload creates the resource it names when none has that label
    (ResourceModifierA.createOrGetResourceCatalog in xnat-web): one request, not two. A read or
    a delete of the missing resource's files stays a 404, and nothing is created by it."""
    resource = _new_resource(http, xnat_server)
    exp = resource.rsplit("/resources/", 1)[0]
    missing = f"{exp}/resources/MADE_BY_PUT"
    assert http.get(_url(xnat_server, f"{missing}/files")).status_code == 404
    assert http.delete(_url(xnat_server, f"{missing}/files/a.txt")).status_code == 404
    assert http.get(_url(xnat_server, missing)).status_code == 404
    put = http.put(
        _url(xnat_server, f"{missing}/files/a.txt"),
        data=b"made",
        params={"inbody": "true", "format": "TXT", "content": "RESULT"},
    )
    assert put.status_code == 200, put.text
    rows = _result(http.get(_url(xnat_server, f"{exp}/resources")))
    made = [r for r in rows if r["label"] == "MADE_BY_PUT"]
    assert len(made) == 1 and made[0]["format"] == "TXT" and made[0]["content"] == "RESULT"
    assert sorted(_files(http, xnat_server, missing)) == ["a.txt"]
    again = http.put(_url(xnat_server, f"{missing}/files/a.txt"), data=b"other")
    assert again.json() == {"duplicates": ["a.txt"]}  # the existing resource, not a second one
    assert [r["label"] for r in _result(http.get(_url(xnat_server, f"{exp}/resources")))].count(
        "MADE_BY_PUT"
    ) == 1
    bad = http.put(_url(xnat_server, f"{exp}/resources/bad%20label/files/a.txt"), data=b"x")
    assert bad.status_code == 400


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tgz_bytes(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("in.zip", _zip_bytes({"a.txt": b"A", "d/b.txt": b"B"})),
        ("in.tar.gz", _tgz_bytes({"a.txt": b"A", "./d/b.txt": b"B"})),
    ],
)
def test_extract_archives(
    http: requests.Session, xnat_server: XnatServer, name: str, body: bytes
) -> None:
    resource = _new_resource(http, xnat_server)
    resp = http.put(
        _url(xnat_server, f"{resource}/files/{name}"), data=body, params={"extract": "true"}
    )
    assert resp.status_code == 200, resp.text
    files = _files(http, xnat_server, resource)
    assert sorted(files) == ["a.txt", "d/b.txt"]
    assert http.get(_url(xnat_server, f"{resource}/files/d/b.txt")).content == b"B"


@pytest.mark.parametrize(
    "body",
    [
        _zip_bytes({"ok.txt": b"fine", "../../evil.txt": b"evil"}),
        _zip_bytes({"ok.txt": b"fine", "/abs/evil.txt": b"evil"}),
        _tgz_bytes({"ok.txt": b"fine", "d/../../evil.txt": b"evil"}),
        _tgz_bytes({"ok.txt": b"fine"}, links={"link": "/etc/passwd"}),
        b"this is not an archive at all",
    ],
)
def test_hostile_archives_are_refused_without_leftovers(
    http: requests.Session, xnat_server: XnatServer, body: bytes
) -> None:
    resource = _new_resource(http, xnat_server)
    resp = http.put(
        _url(xnat_server, f"{resource}/files/up.zip"), data=body, params={"extract": "true"}
    )
    assert resp.status_code == 400
    assert _files(http, xnat_server, resource) == {}
    assert list((xnat_server.data_dir / "tmp").iterdir()) == []
    assert not list(xnat_server.data_dir.parent.rglob("evil.txt"))


# -- counter and persistence ----------------------------------------------------------------


def test_request_counter_by_route_template(http: requests.Session, xnat_server: XnatServer) -> None:
    xnat_server.reset_counts()
    for label in ("DEMO_S001", "DEMO_S002"):
        http.get(_url(xnat_server, f"/data/projects/DEMO/subjects/{label}/experiments"))
    http.get(_url(xnat_server, f"{EXP1}/scans/1/resources/NIFTI/files/T1.nii"))
    counts = xnat_server.request_counts()
    assert counts == {
        "GET /data/projects/{project}/subjects/{subject}/experiments": 2,
        "GET /data/projects/{project}/subjects/{subject}/experiments/{experiment}"
        "/scans/{scan}/resources/{resource}/files/{path}": 1,
    }


def test_data_survives_restart(fresh_xnat_server: XnatServer) -> None:
    server = fresh_xnat_server
    auth = (server.user, server.password)
    res = f"{EXP1}/resources/KEEP"
    assert requests.put(_url(server, res), auth=auth, timeout=10).status_code == 200
    assert (
        requests.put(
            _url(server, f"{res}/files/k.txt"), data=b"kept", auth=auth, timeout=10
        ).status_code
        == 200
    )
    server.add_user("reader", "pw", ["DEMO"], can_write=False)
    server.restart()
    assert (
        requests.get(_url(server, f"{res}/files/k.txt"), auth=auth, timeout=10).content == b"kept"
    )
    subjects = _result(
        requests.get(_url(server, "/data/projects/DEMO/subjects"), auth=auth, timeout=10)
    )
    assert len(subjects) == 3  # the demo data is not created twice
    assert requests.get(_url(server, res), auth=("reader", "pw"), timeout=10).status_code == 200


def test_file_and_directory_clash_is_409_and_changes_nothing(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    resource = _new_resource(http, xnat_server)
    assert http.put(_url(xnat_server, f"{resource}/files/a"), data=b"file").status_code == 200
    clash = http.put(_url(xnat_server, f"{resource}/files/a/b.txt"), data=b"under a file")
    assert clash.status_code == 409
    assert sorted(_files(http, xnat_server, resource)) == ["a"]
    assert list((xnat_server.data_dir / "tmp").iterdir()) == []


def test_multipart_file_names_cannot_escape(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    resource = _new_resource(http, xnat_server)
    resp = http.post(
        _url(xnat_server, f"{resource}/files"), files={"file": ("../../evil.txt", b"evil")}
    )
    assert resp.status_code == 400
    assert _files(http, xnat_server, resource) == {}
    assert not list(xnat_server.data_dir.parent.rglob("evil.txt"))


def test_unknown_routes_are_404_and_logged(http: requests.Session, xnat_server: XnatServer) -> None:
    assert http.get(_url(xnat_server, "/data/projects/DEMO/widgets")).status_code == 404
    deadline = time.monotonic() + 5
    while "unhandled route: GET /data/projects/DEMO/widgets" not in xnat_server.log_text():
        assert time.monotonic() < deadline, xnat_server.log_text()[-2000:]
        time.sleep(0.02)


def test_concurrent_uploads_to_one_resource(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    resource = _new_resource(http, xnat_server)
    auth = (xnat_server.user, xnat_server.password)

    def upload(i: int) -> int:
        body = bytes([i]) * (100_000 + i)
        url = _url(xnat_server, f"{resource}/files/part{i:02d}.bin")
        return requests.put(url, data=body, auth=auth, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(upload, range(16))) == {200}
    files = _files(http, xnat_server, resource)
    assert len(files) == 16
    for i in range(16):
        body = bytes([i]) * (100_000 + i)
        assert files[f"part{i:02d}.bin"]["digest"] == hashlib.md5(body).hexdigest()


def test_zip_of_a_scan_list(http: requests.Session, xnat_server: XnatServer) -> None:
    project = xnat_server.new_project()
    exp = f"/data/projects/{project}/subjects/S/experiments/S_MR1"
    assert http.put(_url(xnat_server, f"/data/projects/{project}/subjects/S")).ok
    assert http.put(_url(xnat_server, exp)).ok
    for scan, kind in (("1", "T1"), ("2", "T2"), ("3", "FLAIR")):
        assert http.put(_url(xnat_server, f"{exp}/scans/{scan}"), params={"type": kind}).ok
        assert http.put(_url(xnat_server, f"{exp}/scans/{scan}/resources/NIFTI")).ok
        assert http.put(_url(xnat_server, f"{exp}/scans/{scan}/resources/NIFTI/files/{kind}.nii"),
                        data=kind.encode()).ok  # fmt: skip
    resp = http.get(_url(xnat_server, f"{exp}/scans/1,3/files"), params={"format": "zip"})
    assert sorted(zipfile.ZipFile(io.BytesIO(resp.content)).namelist()) == [
        "S_MR1/scans/1-T1/resources/NIFTI/files/T1.nii",
        "S_MR1/scans/3-FLAIR/resources/NIFTI/files/FLAIR.nii",
    ]
    listed = _result(http.get(_url(xnat_server, f"{exp}/scans/T2/files")))
    assert [f["Name"] for f in listed] == ["T2.nii"]


def test_multipart_with_a_hostile_second_archive_leaves_nothing(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    resource = _new_resource(http, xnat_server)
    resp = http.post(
        _url(xnat_server, f"{resource}/files"),
        params={"extract": "true"},
        files=[
            ("a", ("good.zip", _zip_bytes({"fine.txt": b"ok"}))),
            ("b", ("bad.zip", _zip_bytes({"../evil.txt": b"evil"}))),
        ],
    )
    assert resp.status_code == 400
    assert _files(http, xnat_server, resource) == {}
    assert list((xnat_server.data_dir / "tmp").iterdir()) == []


def test_ctrl_c_stops_the_server_cleanly(fresh_xnat_server: XnatServer) -> None:
    process = fresh_xnat_server.process
    assert process is not None
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 0
    assert "Traceback" not in fresh_xnat_server.log_text()
    fresh_xnat_server.process = None


def test_refused_requests_are_counted_under_the_same_template(xnat_server: XnatServer) -> None:
    xnat_server.reset_counts()
    path = f"{EXP1}/scans/1/resources/NIFTI/files/T1.nii"
    assert requests.get(_url(xnat_server, path), timeout=10).status_code == 401
    auth = (xnat_server.user, xnat_server.password)
    assert requests.get(_url(xnat_server, path), auth=auth, timeout=10).status_code == 200
    key = (
        "GET /data/projects/{project}/subjects/{subject}/experiments/{experiment}"
        "/scans/{scan}/resources/{resource}/files/{path}"
    )
    assert xnat_server.request_counts() == {key: 2}


def test_head_of_a_file_gives_its_size(http: requests.Session, xnat_server: XnatServer) -> None:
    resp = http.head(_url(xnat_server, f"{EXP1}/scans/1/resources/NIFTI/files/T1.nii"))
    assert resp.status_code == 200
    assert resp.headers["content-length"] == "65888"
    assert resp.content == b""


def test_delete_scan_experiment_subject_project(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    resource = _new_resource(http, xnat_server)  # /data/projects/P/subjects/SUB1/experiments/...
    project = resource.split("/")[3]
    exp = resource.rsplit("/resources/", 1)[0]
    assert http.put(_url(xnat_server, f"{exp}/scans/1"), params={"type": "T1"}).ok
    assert http.put(_url(xnat_server, f"{exp}/scans/1/resources/R")).ok
    assert http.put(_url(xnat_server, f"{exp}/scans/1/resources/R/files/x"), data=b"x").ok
    assert http.put(_url(xnat_server, f"{resource}/files/y"), data=b"y").ok
    dirs = {p for p in (xnat_server.data_dir / "files").iterdir()}
    assert http.delete(_url(xnat_server, f"{exp}/scans/1")).status_code == 200
    assert http.get(_url(xnat_server, f"{exp}/scans/1")).status_code == 404
    assert http.delete(_url(xnat_server, exp)).status_code == 200
    assert http.get(_url(xnat_server, exp)).status_code == 404
    subject = exp.rsplit("/experiments/", 1)[0]
    assert http.delete(_url(xnat_server, subject)).status_code == 200
    assert http.get(_url(xnat_server, subject)).status_code == 404
    assert http.delete(_url(xnat_server, f"/data/projects/{project}")).status_code == 200
    assert http.get(_url(xnat_server, f"/data/projects/{project}")).status_code == 404
    assert len(dirs - set((xnat_server.data_dir / "files").iterdir())) == 2


def test_global_subject_paths(http: requests.Session, xnat_server: XnatServer) -> None:
    rows = _result(http.get(_url(xnat_server, "/data/subjects/X2C_S00002/experiments")))
    assert [r["ID"] for r in rows] == ["X2C_E00002"]
    doc = http.get(_url(xnat_server, "/data/subjects/X2C_S00002"), params={"format": "json"})
    assert doc.json()["items"][0]["data_fields"]["label"] == "DEMO_S002"


def test_limit_and_offset_page_subject_and_experiment_tables(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    def ids(path: str, **params: str) -> list[str]:
        return [r["ID"] for r in _result(http.get(_url(xnat_server, path), params=params))]

    every = ids("/data/projects/DEMO/experiments", format="json")
    assert every == ["X2C_E00001", "X2C_E00002", "X2C_E00003"]
    assert ids("/data/projects/DEMO/experiments", limit="2", offset="1") == every[1:3]
    assert ids("/data/experiments", limit="1", offset="0", project="DEMO") == every[:1]
    assert ids("/data/projects/DEMO/experiments", limit="*") == every
    assert ids("/data/projects/DEMO/experiments", offset="5") == []
    assert ids("/data/projects/DEMO/subjects", limit="2") == ["X2C_S00001", "X2C_S00002"]
    page = http.get(_url(xnat_server, "/data/projects/DEMO/subjects"), params={"limit": "1"})
    assert page.json()["ResultSet"]["totalRecords"] == "1"
    # Scans are not a paged table: XNAT 1.8.9 added paging to subjects and experiments only.
    assert len(ids(f"{EXP1}/scans", limit="0")) == 1
    bad = http.get(_url(xnat_server, "/data/projects/DEMO/experiments"), params={"limit": "ten"})
    assert bad.status_code == 422
    assert "limit=*" in bad.text


def _search_doc(root: str, where: str, fields: str = "") -> str:
    fields = (
        fields
        or f"<xdat:element_name>{root}</xdat:element_name><xdat:field_ID>LABEL</xdat:field_ID>"
    )
    return (
        '<xdat:bundle xmlns:xdat="http://nrg.wustl.edu/security">'
        f"<xdat:root_element_name>{root}</xdat:root_element_name>"
        f"<xdat:search_field>{fields}</xdat:search_field>"
        f'<xdat:search_where method="AND">{where}</xdat:search_where></xdat:bundle>'
    )


def _criterion(field: str, op: str, value: str) -> str:
    return (
        "<xdat:criteria><xdat:schema_field>"
        f"{field}</xdat:schema_field><xdat:comparison_type>{op}</xdat:comparison_type>"
        f"<xdat:value>{value}</xdat:value></xdat:criteria>"
    )


def test_search_answers_json_and_refuses_unsupported_criteria(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    url = _url(xnat_server, "/data/search")
    ok = http.post(
        url,
        params={"format": "json"},
        data=_search_doc(
            "xnat:subjectData", _criterion("xnat:subjectData/LABEL", "&lt;", "DEMO_S002")
        ),
    )
    assert ok.status_code == 200, ok.text
    assert [r["label"] for r in ok.json()["ResultSet"]["Result"]] == ["DEMO_S001"]
    refused = {
        "root": _search_doc("xnat:mrScanData", ""),
        "field": _search_doc("xnat:mrSessionData", _criterion("xnat:mrSessionData/AGE", ">", "4")),
        "comparison": _search_doc(
            "xnat:mrSessionData", _criterion("xnat:mrSessionData/LABEL", "SOUNDS LIKE", "x")
        ),
        "custom field": _search_doc(
            "xnat:mrSessionData",
            _criterion("xnat:mrSessionData/XNAT_MRSESSIONDATA_FIELD_MAP=age", "=", "4"),
        ),
        "DTD": '<!DOCTYPE x [<!ENTITY a "b">]>' + _search_doc("xnat:mrSessionData", ""),
        "not XML": "label=DEMO",
    }
    for what, doc in refused.items():
        resp = http.post(url, params={"format": "csv"}, data=doc)
        assert resp.status_code == 400, what
        assert "search:" in resp.text, what


def test_shared_subject_and_experiment_are_listed_with_their_owner(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    owner, other = xnat_server.new_project("OWN"), xnat_server.new_project("SHR")
    base = f"/data/projects/{owner}/subjects/S1"
    assert http.put(_url(xnat_server, base)).status_code == 201
    eid = http.put(_url(xnat_server, f"{base}/experiments/S1_MR1")).text
    for path in (f"{base}/projects/{other}", f"{base}/experiments/S1_MR1/projects/{other}"):
        assert http.put(_url(xnat_server, path), params={"label": "SHARED"}).status_code == 201

    def rows(path: str) -> list[tuple[str, str, str]]:
        return [
            (r["ID"], r["label"], r["project"]) for r in _result(http.get(_url(xnat_server, path)))
        ]

    # Listed in the second project with their OWNING project, as the recorded XNAT listing shows.
    assert [r[2] for r in rows(f"/data/projects/{other}/subjects")] == [owner]
    assert [(r[0], r[2]) for r in rows(f"/data/projects/{other}/experiments")] == [(eid, owner)]
    assert rows(f"/data/projects/{other}/subjects/SHARED/experiments")[0][0] == eid
    assert http.get(_url(xnat_server, f"/data/projects/{other}/experiments/SHARED")).ok
    shares = _result(http.get(_url(xnat_server, f"{base}/projects")))
    assert sorted(r["ID"] for r in shares) == sorted([owner, other])
    # A user of the second project only sees the shared objects, through either project path.
    xnat_server.add_user("sharereader", "pw-share-1", [other])
    reader = requests.Session()
    reader.auth = ("sharereader", "pw-share-1")
    assert reader.get(_url(xnat_server, f"/data/experiments/{eid}"), params={"format": "json"}).ok
    assert reader.get(_url(xnat_server, f"/data/projects/{owner}")).status_code == 404
    # The owner cannot be unshared; the share can; the second project's deletion spares it.
    assert http.delete(_url(xnat_server, f"{base}/projects/{owner}")).status_code == 400
    assert http.delete(_url(xnat_server, f"{base}/experiments/S1_MR1/projects/{other}")).ok
    assert rows(f"/data/projects/{other}/experiments") == []
    assert http.delete(_url(xnat_server, f"/data/projects/{other}")).ok
    assert [r[0] for r in rows(f"/data/projects/{owner}/experiments")] == [eid]


def test_documented_shapes_of_scan_documents_and_resource_listings(
    http: requests.Session, xnat_server: XnatServer
) -> None:
    # XNAT's API pages (documented, not recorded: tests/data/xnat/recorded/README.md): a scan
    # document's numeric fields are JSON numbers; a resource listing's envelope has a title.
    scan = http.get(_url(xnat_server, f"{EXP1}/scans/1"), params={"format": "json"}).json()
    fields = scan["items"][0]["data_fields"]
    assert isinstance(fields["xnat_imagescandata_id"], int)
    assert isinstance(fields["ID"], str)
    listing = http.get(_url(xnat_server, f"{EXP1}/scans/1/resources"), params={"format": "json"})
    assert listing.json()["ResultSet"]["title"] == "Resources"
    assert listing.json()["ResultSet"]["totalRecords"] == "2"
    xml = http.get(_url(xnat_server, f"{EXP1}/scans/1"), params={"format": "xml"}).text
    assert "xnat_imagescandata_id" not in xml
