"""Streaming XNAT files through the verifying ByteSource."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.x2c.xnat.conftest import Requests
from x2c.errors import IntegrityError
from x2c.selection import InputSelection
from x2c.sources import ByteSource, FileRef
from x2c.xnat import XnatByteSource, XnatFileRef, XnatSession, list_experiments, select_inputs


def _refs(session: XnatSession, project: str, resource: str = "NIFTI") -> list[XnatFileRef]:
    eid = list_experiments(session, project)[0].id
    return list(
        select_inputs(session, eid, InputSelection(scan_types=("T1*",), resource=resource)).files
    )


def test_streamed_bytes_match_the_listing_in_one_request(
    session: XnatSession, demo_project: str, server_requests: Requests
) -> None:
    ref = _refs(session, demo_project)[0]
    source: ByteSource = XnatByteSource(session)
    server_requests.reset()
    chunks = list(source.iter_bytes(ref, chunk_size=4096))
    assert server_requests.total() == 1
    data = b"".join(chunks)
    assert len(data) == ref.size and hashlib.md5(data).hexdigest() == ref.md5
    assert max(len(c) for c in chunks) <= 4096


def _file_on_disk(data_dir: Path, ref: XnatFileRef) -> Path:
    name = ref.path.rsplit("/", 1)[-1]
    candidates = [
        p
        for p in Path(data_dir).rglob(name)
        if p.is_file() and hashlib.md5(p.read_bytes()).hexdigest() == ref.md5
    ]
    assert len(candidates) == 1, f"cannot find {name} with md5 {ref.md5} under {data_dir}"
    return candidates[0]


def _corrupt(xnat_server: Any, ref: XnatFileRef, flip: bool = True) -> tuple[Path, bytes]:
    path = _file_on_disk(xnat_server.data_dir, ref)
    original = path.read_bytes()
    damaged = bytearray(original)
    if flip:
        damaged[len(damaged) // 2] ^= 0xFF
    else:
        damaged += b"extra"
    path.write_bytes(bytes(damaged))
    return path, original


def _two_t1_files(session: XnatSession) -> tuple[XnatFileRef, XnatFileRef]:
    """The T1 file of each of the first two DEMO experiments."""
    first, second = (e.id for e in list_experiments(session, "DEMO")[:2])
    pick = InputSelection(scan_types=("T1",))
    return select_inputs(session, first, pick).files[0], select_inputs(session, second, pick).files[
        0
    ]


def test_a_corrupted_file_is_an_integrity_error_naming_it(
    fresh_xnat_server: Any, tmp_path: Path
) -> None:
    from tests.x2c.xnat.conftest import xnat_config
    from x2c.xnat import connect

    with connect(xnat_config(fresh_xnat_server)) as session:
        flipped, longer = _two_t1_files(session)
        _corrupt(fresh_xnat_server, flipped, flip=True)
        with pytest.raises(IntegrityError, match=r"md5 [0-9a-f]{32} differs") as info:
            for _ in XnatByteSource(session).iter_bytes(flipped):
                pass
        assert info.value.name == flipped.path and flipped.path in str(info.value)
        assert info.value.expected == flipped.md5
        _corrupt(fresh_xnat_server, longer, flip=False)
        with pytest.raises(IntegrityError, match="size"):
            for _ in XnatByteSource(session).iter_bytes(longer):
                pass


def test_staged_from_xnat_each_byte_is_hashed_once_and_a_damaged_file_lands_nowhere(
    fresh_xnat_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """X -> Y: the XNAT stream checks the md5, so the transfer does not hash the bytes again
    (a second md5 of every byte cost a fifth of a large staging's time on a busy Z), and a
    mismatch still stops the file before it is renamed into place."""
    from tests.x2c.xnat.conftest import xnat_config
    from x2c import transfers
    from x2c.hosts import LocalHost
    from x2c.xnat import connect

    hashed: list[int] = []
    real_md5 = hashlib.md5

    class Counting:
        def __init__(self, *args: bytes, **kwargs: Any) -> None:
            self._md5 = real_md5(**kwargs)
            for data in args:
                self.update(data)

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self._md5.update(data)

        def hexdigest(self) -> str:
            return self._md5.hexdigest()

    with connect(xnat_config(fresh_xnat_server)) as session:
        good, bad = _two_t1_files(session)
        _corrupt(fresh_xnat_server, bad, flip=True)
        monkeypatch.setattr(transfers.hashlib, "md5", Counting)  # the one hashlib module
        source = XnatByteSource(session)
        dest = tmp_path / "dest"
        report = transfers.stage(source, [good], LocalHost(), str(dest), max_parallel=1)
        assert report.copied == 1 and sum(hashed) == good.size  # once, not twice
        assert real_md5((dest / good.path).read_bytes()).hexdigest() == good.md5
        with pytest.raises(IntegrityError, match=r"md5 [0-9a-f]{32} differs") as info:
            transfers.stage(source, [bad], LocalHost(), str(tmp_path / "bad"), max_parallel=1)
        assert info.value.name == bad.path
        assert [p for p in (tmp_path / "bad").rglob("*") if p.is_file()] == []


def test_only_xnat_refs_are_accepted(session: XnatSession) -> None:
    with pytest.raises(TypeError):
        next(iter(XnatByteSource(session).iter_bytes(FileRef("a", 1, None))))


def test_a_stream_cut_short_is_transient_and_names_the_file(
    xnat_server: Any, demo_project: str
) -> None:
    from tests.x2c.xnat.conftest import xnat_config
    from tests.x2c.xnat.faultproxy import Fault, FaultProxy
    from x2c.errors import XnatTransientError
    from x2c.xnat import connect

    with FaultProxy(xnat_server.url).running() as proxy:
        session = connect(xnat_config(xnat_server, url=proxy.url))
        ref = _refs(session, demo_project)[0]
        proxy.add(Fault(r"GET /data/experiments/.*/files/T1\.nii", truncate=True))
        received = 0
        with pytest.raises(XnatTransientError, match=r"download .*T1\.nii.*cut short"):
            for chunk in XnatByteSource(session).iter_bytes(ref, chunk_size=1024):
                received += len(chunk)
        assert received < ref.size
        # the next attempt (the consumer's retry) gets the whole, verified file
        assert sum(len(c) for c in XnatByteSource(session).iter_bytes(ref)) == ref.size
        session.close()


def test_a_corrupt_source_aborts_an_upload_stream_before_provenance(
    fresh_xnat_server: Any,
) -> None:
    """X -> Z -> X: the source's own verification stops the upload; nothing is marked done."""
    from tests.x2c.xnat.conftest import xnat_config
    from x2c.xnat import ResourceState, connect, resource_status, upload_files

    with connect(xnat_config(fresh_xnat_server)) as session:
        eid = list_experiments(session, "DEMO")[0].id
        ref = select_inputs(session, eid, InputSelection(scan_types=("T1",))).files[0]
        _corrupt(fresh_xnat_server, ref, flip=True)
        with pytest.raises(IntegrityError) as info:
            upload_files(
                session,
                eid,
                "COPY",
                [(FileRef("copy.nii", ref.size, ref.md5), _Same(XnatByteSource(session), ref))],
                provenance={},
                version="1",
            )
        assert info.value.name == ref.path
        # the aborted first upload created nothing, or an empty resource: never a result
        state = resource_status(session, eid, "COPY", "1").state
        assert state in (ResourceState.MISSING, ResourceState.INCOMPLETE), state


class _Same:
    def __init__(self, source: XnatByteSource, ref: XnatFileRef) -> None:
        self._source, self._ref = source, ref

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Any:
        return self._source.iter_bytes(self._ref, chunk_size)
