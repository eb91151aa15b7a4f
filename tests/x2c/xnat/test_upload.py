"""Uploading results: verified by listing back, provenance last, and is_done answered from it."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.x2c.xnat.conftest import Requests, xnat_config
from tests.x2c.xnat.faultproxy import Fault, FaultProxy
from x2c.errors import IntegrityError, XnatConflictError, XnatError
from x2c.selection import InputSelection
from x2c.sources import FileRef
from x2c.xnat import (
    PROVENANCE_NAME,
    ResourceState,
    XnatByteSource,
    XnatSession,
    connect,
    is_done,
    list_resource_files,
    path_of,
    resource_status,
    select_inputs,
    upload_archive,
    upload_directory,
    upload_files,
)
from x2c.xnat.upload import _BytesSource

PROV = {"pipeline": "hippo", "image": "hippo.sif", "exit_code": 0}


@pytest.fixture
def eid(own_experiments: list[str]) -> str:
    return own_experiments[0]


def _result_dir(tmp_path: Path) -> Path:
    root = tmp_path / "out"
    (root / "stats").mkdir(parents=True)
    (root / "lh.hippoSfVolumes.txt").write_text("CA1 123.4\n")
    (root / "stats" / "aseg.stats").write_bytes(bytes(range(256)) * 100)
    return root


def test_upload_directory_verifies_and_counts_requests(
    session: XnatSession, eid: str, tmp_path: Path, server_requests: Requests
) -> None:
    root = _result_dir(tmp_path)
    server_requests.reset()
    receipt = upload_directory(
        session, eid, "FS6_HIPPO", root, provenance=PROV, version="1.2", on_exists="replace"
    )
    # DELETE + 2 files (the first creates the resource) + listing + provenance + listing
    assert server_requests.total() == 1 + 2 + 3
    assert receipt.uri.endswith(f"/data/experiments/{eid}/resources/FS6_HIPPO")
    assert [f.path for f in receipt.files] == ["lh.hippoSfVolumes.txt", "stats/aseg.stats"]
    want = hashlib.md5((root / "stats" / "aseg.stats").read_bytes()).hexdigest()
    assert receipt.files[1].md5 == want
    listed = {f.path: f for f in list_resource_files(session, eid, "FS6_HIPPO")}
    assert set(listed) == {"lh.hippoSfVolumes.txt", "stats/aseg.stats", PROVENANCE_NAME}
    assert listed[PROVENANCE_NAME].digest == receipt.provenance.md5

    server_requests.reset()
    status = resource_status(session, eid, "FS6_HIPPO", "1.2")
    assert server_requests.total() == 2
    assert status.state is ResourceState.DONE and status.done
    assert status.provenance is not None and status.provenance["pipeline"] == "hippo"
    assert status.provenance["x2c_resource"]["files"][1]["md5"] == want
    assert resource_status(session, eid, "FS6_HIPPO", "1.3").state is ResourceState.OUTDATED


def test_existing_resource_conflicts_unless_asked(
    session: XnatSession, eid: str, tmp_path: Path
) -> None:
    root = _result_dir(tmp_path)
    upload_directory(session, eid, "FS6_C", root, provenance=PROV, version="1", on_exists="replace")
    with pytest.raises(XnatConflictError, match="on_exists='replace'"):
        upload_directory(session, eid, "FS6_C", root, provenance=PROV, version="2")
    assert is_done(session, eid, "FS6_C", "1"), "the conflict left the earlier result alone"
    (root / "lh.hippoSfVolumes.txt").write_text("CA1 999.9\n")
    receipt = upload_directory(
        session, eid, "FS6_C", root, provenance=PROV, version="2", on_exists="overwrite"
    )
    assert is_done(session, eid, "FS6_C", "2") and not is_done(session, eid, "FS6_C", "1")
    assert receipt.files[0].md5 == hashlib.md5(b"CA1 999.9\n").hexdigest()


def test_upload_archive_as_one_file(session: XnatSession, eid: str, tmp_path: Path) -> None:
    archive = tmp_path / "hippo_zip.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "a" * 1000)
    receipt = upload_archive(
        session, eid, "FS6_ZIP", archive, provenance=PROV, version="1", on_exists="replace"
    )
    assert [f.path for f in receipt.files] == ["hippo_zip.zip"]
    assert receipt.files[0].md5 == hashlib.md5(archive.read_bytes()).hexdigest()


def test_stream_from_a_byte_source_x_to_x(session: XnatSession, eid: str) -> None:
    """The Y -> Z -> X path with XNAT itself as the source: nothing touches local disk."""
    refs = select_inputs(session, eid, InputSelection(scan_types=("T1*",))).files
    source = XnatByteSource(session)
    pairs = [
        (FileRef(f"copy/{i}.nii.gz", r.size, r.md5), _Renamed(source, r))
        for i, r in enumerate(refs)
    ]
    receipt = upload_files(
        session, eid, "COPY", pairs, provenance=PROV, version="1", on_exists="replace"
    )
    assert [f.md5 for f in receipt.files] == [r.md5 for r in refs]
    assert is_done(session, eid, "COPY", "1")


class _Renamed:
    """Streams ``ref`` from ``source`` whatever FileRef it is asked for."""

    def __init__(self, source: XnatByteSource, ref: Any) -> None:
        self._source, self._ref = source, ref

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Any:
        return self._source.iter_bytes(self._ref, chunk_size)


def test_a_source_that_lies_about_its_md5_fails_before_provenance(
    session: XnatSession, eid: str
) -> None:
    blob = b"result bytes"
    ref = FileRef("r.txt", len(blob), "0" * 32)
    with pytest.raises(IntegrityError, match=r"r\.txt: sent md5") as info:
        upload_files(
            session,
            eid,
            "LIAR",
            [(ref, _BytesSource(blob))],
            provenance=PROV,
            version="1",
            on_exists="replace",
        )
    assert info.value.name == "r.txt"
    status = resource_status(session, eid, "LIAR", "1")
    assert status.state is ResourceState.INCOMPLETE and PROVENANCE_NAME in status.reason


def test_upload_verification_failure_leaves_the_resource_incomplete(
    xnat_server: Any, eid: str
) -> None:
    """The server lists a digest other than what was sent (tampered by the proxy)."""
    with FaultProxy(xnat_server.url).running() as proxy:
        session = connect(xnat_config(xnat_server, url=proxy.url))
        blob = b"payload"
        good = hashlib.md5(blob).hexdigest()

        def tamper(body: bytes) -> bytes:
            return body.replace(good.encode(), b"f" * 32)

        proxy.add(
            Fault(r"GET /data/experiments/[^/]+/resources/TAMPER/files\?", times=1, tamper=tamper)
        )
        with pytest.raises(IntegrityError, match=r"payload.bin: XNAT lists md5 f{32}") as info:
            upload_files(
                session,
                eid,
                "TAMPER",
                [(FileRef("payload.bin", len(blob), None), _BytesSource(blob))],
                provenance=PROV,
                version="1",
                on_exists="replace",
            )
        assert info.value.expected == good
        assert not is_done(session, eid, "TAMPER", "1")
        session.close()


def test_an_unverified_upload_costs_a_request_per_file_and_one_status_verifies_it(
    xnat_server: Any, eid: str, server_requests: Requests
) -> None:
    """``verify=False``: N files + provenance and nothing else (the first file creates the
    resource); the provenance records the md5s as sent, so the one later status listing is the
    verification: a listing that differs from them is never DONE."""
    blobs = {"a.txt": b"alpha\n", "b/c.bin": bytes(range(256)) * 40}
    files = [(FileRef(n, len(b), None), _BytesSource(b)) for n, b in blobs.items()]
    with FaultProxy(xnat_server.url).running() as proxy:
        session = connect(xnat_config(xnat_server, url=proxy.url))
        server_requests.reset()
        receipt = upload_files(
            session, eid, "UNVERIFIED", files, provenance=PROV, version="1", verify=False
        )
        assert server_requests.total() == len(blobs) + 1, server_requests.counts()
        assert [f.md5 for f in receipt.files] == [
            hashlib.md5(b).hexdigest() for b in blobs.values()
        ]
        server_requests.reset()
        assert resource_status(session, eid, "UNVERIFIED", "1", read=False).done
        assert server_requests.total() == 1
        good = hashlib.md5(blobs["a.txt"]).hexdigest()
        proxy.add(
            Fault(
                r"GET /data/experiments/[^/]+/resources/UNVERIFIED/files\?",
                tamper=lambda body: body.replace(good.encode(), b"0" * 32),
            )
        )
        status = resource_status(session, eid, "UNVERIFIED", "1", read=False)
        assert status.state is ResourceState.DAMAGED and "a.txt" in status.reason, status
        session.close()


def test_damaged_and_missing_states(session: XnatSession, eid: str, tmp_path: Path) -> None:
    assert resource_status(session, eid, "NEVER_UPLOADED", "1").state is ResourceState.MISSING
    upload_directory(
        session,
        eid,
        "FS6_D",
        _result_dir(tmp_path),
        provenance=PROV,
        version="1",
        on_exists="replace",
    )
    session.request(
        "DELETE",
        path_of("data", "experiments", eid, "resources", "FS6_D", "files", "stats", "aseg.stats"),
        what="delete a result file",
    )
    status = resource_status(session, eid, "FS6_D", "1")
    assert status.state is ResourceState.DAMAGED and "stats/aseg.stats is missing" in status.reason


def test_the_provenance_mark_answers_a_status_in_one_listing(
    session: XnatSession, eid: str, tmp_path: Path, server_requests: Requests
) -> None:
    """``read=False``: x2c's provenance carries a mark (version, digest of the data files) in
    its ``content`` attribute, so one listing says DONE or OUTDATED; anything the mark does not
    prove (a changed file, a provenance without the mark) falls back to reading it."""
    upload_directory(
        session, eid, "FS6_M", _result_dir(tmp_path), provenance=PROV, version="1",
        on_exists="replace",
    )  # fmt: skip
    listed = {f.path: f for f in list_resource_files(session, eid, "FS6_M")}
    assert listed[PROVENANCE_NAME].content.startswith("x2c-provenance:")
    for version, state in (("1", ResourceState.DONE), ("2", ResourceState.OUTDATED)):
        server_requests.reset()
        status = resource_status(session, eid, "FS6_M", version, read=False)
        assert (status.state, server_requests.total()) == (state, 1), status
        assert status.provenance is None
        assert resource_status(session, eid, "FS6_M", version).state is state

    damaged = path_of(
        "data", "experiments", eid, "resources", "FS6_M", "files", "stats", "aseg.stats"
    )
    session.request(
        "PUT", damaged, what="change a result file", params={"inbody": "true", "overwrite": "true"},
        body=lambda: iter([b"not the result"]), accept=(200, 201),
    )  # fmt: skip
    server_requests.reset()
    status = resource_status(session, eid, "FS6_M", "1", read=False)
    assert status.state is ResourceState.DAMAGED and "stats/aseg.stats" in status.reason
    assert server_requests.total() == 2, "the mark no longer matched: the provenance was read"

    unmarked = path_of("data", "experiments", eid, "resources", "FS6_M", "files", PROVENANCE_NAME)
    blob = json.dumps({"x2c_resource": {"label": "FS6_M", "version": "1", "files": []}}).encode()
    session.request(
        "PUT", unmarked, what="a provenance without the mark", accept=(200, 201),
        params={"inbody": "true", "overwrite": "true"}, body=lambda: iter([blob]),
    )  # fmt: skip
    server_requests.reset()
    assert resource_status(session, eid, "FS6_M", "1", read=False).done
    assert server_requests.total() == 2, "no mark: the provenance was read"


def test_uploads_retry_a_5xx(xnat_server: Any, eid: str) -> None:
    with FaultProxy(xnat_server.url).running() as proxy:
        session = connect(xnat_config(xnat_server, url=proxy.url))
        proxy.add(Fault(r"PUT /data/experiments/[^/]+/resources/RETRY/files/", times=1, status=500))
        blob = b"x" * 100_000
        receipt = upload_files(
            session,
            eid,
            "RETRY",
            [(FileRef("x.bin", len(blob), None), _BytesSource(blob))],
            provenance=PROV,
            version="1",
            on_exists="replace",
        )
        assert receipt.files[0].size == len(blob)
        assert proxy.count(r"PUT /data/experiments/[^/]+/resources/RETRY/files/x.bin") == 2
        session.close()


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "a//b", PROVENANCE_NAME])
def test_bad_result_names_are_refused(session: XnatSession, eid: str, name: str) -> None:
    with pytest.raises(XnatError):
        upload_files(
            session,
            eid,
            "BAD",
            [(FileRef(name, 1, None), _BytesSource(b"x"))],
            provenance=PROV,
            version="1",
            on_exists="replace",
        )


@pytest.mark.parametrize("label", ["$(id) 'x", "../x", "a/../../b", ".."])
def test_hostile_resource_label_is_refused_cleanly(
    session: XnatSession, eid: str, label: str
) -> None:
    with pytest.raises(XnatError) as info:
        upload_files(
            session,
            eid,
            label,
            [(FileRef("a", 1, None), _BytesSource(b"x"))],
            provenance=PROV,
            version="1",
        )
    assert info.value.status in (400, 404, None)
    names = {
        r["label"]
        for r in session.result_set(
            path_of("data", "experiments", eid, "resources"), what="list resources"
        )
    }
    assert not any(".." in n or "$" in n for n in names)


def test_provenance_is_json_with_the_callers_record(session: XnatSession, eid: str) -> None:
    blob = b"1"
    receipt = upload_files(
        session,
        eid,
        "PROV",
        [(FileRef("one.txt", 1, None), _BytesSource(blob))],
        provenance={**PROV, "nested": {"when": "now"}},
        version="3",
        on_exists="replace",
    )
    data = b"".join(
        XnatByteSource(session).iter_bytes(_ref_of(session, eid, "PROV", PROVENANCE_NAME))
    )
    document = json.loads(data)
    assert document["nested"] == {"when": "now"} and document["x2c_resource"]["version"] == "3"
    assert receipt.provenance.md5 == hashlib.md5(data).hexdigest()


def _ref_of(session: XnatSession, eid: str, label: str, name: str) -> Any:
    from x2c.xnat import XnatFileRef

    f = next(f for f in list_resource_files(session, eid, label) if f.path == name)
    return XnatFileRef(path=f.path, size=f.size, md5=f.digest, uri=f.uri)


def test_upload_archive_extracted_is_verified_member_by_member(
    session: XnatSession, eid: str, tmp_path: Path, server_requests: Requests
) -> None:
    import tarfile

    archive = tmp_path / "hippo.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("stats/lh.txt", "left\n")
        zf.writestr("stats/rh.txt", "right\n" * 1000)
    server_requests.reset()
    receipt = upload_archive(
        session,
        eid,
        "FS6_X",
        archive,
        provenance=PROV,
        version="1",
        on_exists="replace",
        extract=True,
    )
    assert server_requests.total() == 2 + 1 + 1 + 1  # delete, zip, list, prov, list
    assert [(f.path, f.md5) for f in receipt.files] == [
        ("stats/lh.txt", hashlib.md5(b"left\n").hexdigest()),
        ("stats/rh.txt", hashlib.md5(b"right\n" * 1000).hexdigest()),
    ]
    assert is_done(session, eid, "FS6_X", "1")

    tarball = tmp_path / "out.tar.gz"
    with tarfile.open(tarball, "w:gz") as tf:
        tf.add(tmp_path / "hippo.zip", arcname="./inner/hippo.zip")
    receipt = upload_archive(
        session,
        eid,
        "FS6_T",
        tarball,
        provenance=PROV,
        version="1",
        on_exists="replace",
        extract=True,
    )
    assert [f.path for f in receipt.files] == ["inner/hippo.zip"]


def test_hostile_archive_is_refused_before_sending(
    session: XnatSession, eid: str, tmp_path: Path, server_requests: Requests
) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../../etc/cron.d/x", "boom")
    server_requests.reset()
    with pytest.raises(XnatError, match="plain relative path"):
        upload_archive(session, eid, "EVIL", archive, provenance=PROV, version="1", extract=True)
    assert server_requests.total() == 0
    not_archive = tmp_path / "plain.zip"
    not_archive.write_text("not a zip")
    with pytest.raises(XnatError, match="neither a zip nor a tar"):
        upload_archive(
            session, eid, "EVIL", not_archive, provenance=PROV, version="1", extract=True
        )


def test_empty_and_spaced_file_names_round_trip(
    session: XnatSession, eid: str, tmp_path: Path
) -> None:
    root = tmp_path / "res"
    (root / "sub dir").mkdir(parents=True)
    (root / "empty.txt").write_bytes(b"")
    (root / "sub dir" / "it's $(x).txt").write_text("q")
    receipt = upload_directory(
        session, eid, "ODD", root, provenance=PROV, version="1", on_exists="replace"
    )
    assert {(f.path, f.size) for f in receipt.files} == {
        ("empty.txt", 0),
        ("sub dir/it's $(x).txt", 1),
    }
    assert is_done(session, eid, "ODD", "1")
