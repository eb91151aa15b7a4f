"""Pure parts of devxnat: column shortcuts, filters, paths, archive checks, index writes."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from x2c.devxnat import listings
from x2c.devxnat.archives import (
    BadArchiveError,
    UnsafeArchiveError,
    clean_relpath,
    extract,
    stream_zip,
)
from x2c.devxnat.paths import template_of


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ("label", "label"),
        ("LABEL", "label"),
        ("xnat:subjectAssessorData/subject_id", "subject_ID"),
        ("xnat:mrSessionData/meta/last_modified", "last_modified"),
        ("xnat:experimentData/label", "label"),
        ("xsiType", "xsiType"),
        ("xsi_type", "xsiType"),
        ("xnat:subjectData/label", "subject_label"),
        ("xnat:mrScanData/type", "scan/type"),
        ("xnat:imageScanData/ID", "scan/ID"),
        ("no_such_column", None),
    ],
)
def test_experiment_column_shortcuts(column: str, expected: str | None) -> None:
    assert listings.shortcut(listings.EXPERIMENTS, column) == expected


def test_choose_columns_keeps_uri_and_drops_unknown() -> None:
    assert listings.choose_columns(listings.SUBJECTS, "label,bogus,ID") == [
        ("label", "label"),
        ("ID", "ID"),
        ("URI", "URI"),
    ]
    assert [k for k, _ in listings.choose_columns(listings.RESOURCES, "ID,URI")] == list(
        listings.RESOURCES.defaults
    )


def test_choose_columns_keys_scan_xpaths_by_xpath_and_names_the_root_id() -> None:
    cols = listings.choose_columns(
        listings.EXPERIMENTS,
        "ID,xnat:subjectAssessorData/subject_id,xnat:mrScanData/type",
        "xnat:mrSessionData",
    )
    assert cols == [
        ("ID", "ID"),
        ("subject_ID", "subject_ID"),
        ("xnat:mrscandata/type", "scan/type"),
        ("xnat:mrsessiondata/id", "ID"),
        ("URI", "URI"),
    ]
    default = listings.choose_columns(listings.EXPERIMENTS, None, "xnat:petSessionData")
    assert ("xnat:petsessiondata/id", "ID") in default
    assert ("xnat:subjectassessordata/id", "ID") in listings.choose_columns(
        listings.EXPERIMENTS, None
    )


@pytest.mark.parametrize(
    ("xsi_type", "wanted", "expected"),
    [
        ("xnat:mrSessionData", "xnat:subjectAssessorData", True),
        ("xnat:petSessionData", "xnat:imageSessionData", True),
        ("xnat:ctSessionData", "xnat:experimentData", True),
        ("xnat:mrSessionData", "xnat:petSessionData", False),
        ("xnat:imageSessionData", "xnat:mrSessionData", False),
        ("xnat:mrScanData", "xnat:imageScanData", True),
    ],
)
def test_type_filter_follows_the_hierarchy(xsi_type: str, wanted: str, expected: bool) -> None:
    rows = [{"ID": "E1", "xsiType": xsi_type}]
    kept = listings.filter_rows(listings.EXPERIMENTS, rows, {"xsiType": wanted})
    assert bool(kept) is expected


def test_filters_match_wildcards_and_alternatives() -> None:
    rows = [
        {"ID": "E1", "label": "a_MR1"},
        {"ID": "E2", "label": "b_MR1"},
        {"ID": "E3", "label": "c"},
    ]
    keep = listings.filter_rows(listings.EXPERIMENTS, rows, {"label": "*_MR1", "format": "json"})
    assert [r["ID"] for r in keep] == ["E1", "E2"]
    keep = listings.filter_rows(listings.EXPERIMENTS, rows, {"ID": "E1,E3"})
    assert [r["ID"] for r in keep] == ["E1", "E3"]


def test_csv_render_quotes_commas() -> None:
    body, media = listings.render(
        listings.SUBJECTS, [{"ID": "S1", "label": "a,b"}], [("ID", "ID"), ("label", "label")], "csv"
    )
    assert media.startswith("text/csv")
    assert body == 'ID,label\nS1,"a,b"\n'


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a/b.txt", "a/b.txt"), ("./a//b.txt", "a/b.txt"), ("a\\b.txt", "a/b.txt")],
)
def test_clean_relpath_accepts(name: str, expected: str) -> None:
    assert clean_relpath(name) == expected


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "a/../../x", "C:/x", "a/\x00b", "."])
def test_clean_relpath_refuses(name: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        clean_relpath(name)


def test_zip_symlink_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link")
        info.external_attr = 0o120777 << 16
        zf.writestr(info, "/etc/passwd")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError):
        extract(archive, "a.zip", out)
    assert list(out.iterdir()) == []


def test_tar_hardlink_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("hard")
        info.type = tarfile.LNKTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsafeArchiveError):
        extract(archive, "a.tar", out)
    assert list(out.iterdir()) == []


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"plain text")
    with pytest.raises(BadArchiveError):
        extract(junk, "junk.zip", tmp_path)


def test_stream_zip_round_trips(tmp_path: Path) -> None:
    files = {}
    for i in range(3):
        path = tmp_path / f"f{i}"
        path.write_bytes(bytes([i]) * (1 << 20) + b"tail")
        files[f"s/scans/1-T1/resources/R/files/f{i}"] = path
    chunks = list(stream_zip(files.items()))
    assert len(chunks) > 3  # streamed, not produced in one piece
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zf:
        assert zf.testzip() is None
        for name, path in files.items():
            assert zf.read(name) == path.read_bytes()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/projects", "/data/projects"),
        ("/REST/projects/P/subjects", "/data/projects/{project}/subjects"),
        (
            "/data/archive/projects/P/subjects/S/experiments/E/scans/1/resources/R/files/a/b.nii",
            "/data/projects/{project}/subjects/{subject}/experiments/{experiment}"
            "/scans/{scan}/resources/{resource}/files/{path}",
        ),
        (
            "/data/experiments/E/scans/ALL/files",
            "/data/experiments/{experiment}/scans/{scan}/files",
        ),
        ("/data/JSESSION", "/data/JSESSION"),
        ("/xapi/schemas/xnat", "/xapi/schemas/xnat"),
    ],
)
def test_route_templates(path: str, expected: str) -> None:
    assert template_of(path) == expected


def test_changes_are_written_once_per_sync_and_concurrent_syncs_share_a_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change is on disk after :meth:`Store.sync` (the server calls it before answering a
    write); the whole index is written once for all the changes made since the last write,
    however many requests wait for it (the write per change made N uploads O(N^2))."""
    from x2c.devxnat import store as store_module
    from x2c.devxnat.store import Store

    writes: list[str] = []
    real = store_module.atomic_write_text

    def counting(path: Path, text: str) -> None:
        writes.append(text)
        real(path, text)

    monkeypatch.setattr(store_module, "atomic_write_text", counting)
    store = Store(tmp_path / "data", "admin", "pw")
    assert len(writes) == 1  # the empty index
    for n in range(5):
        with store.lock:
            store.index["projects"][f"P{n}"] = {"ID": f"P{n}"}
            store.save()
    on_disk = json.loads((tmp_path / "data" / "index.json").read_text())
    assert on_disk["projects"] == {}, "save() notes the change; sync() writes it"
    threads = [threading.Thread(target=store.sync) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(writes) == 2, "five changes, eight syncs: one write"
    assert sorted(json.loads(writes[-1])["projects"]) == [f"P{n}" for n in range(5)]
    store.sync()
    assert len(writes) == 2, "nothing changed since: no write"
    reopened = Store(tmp_path / "data", "admin", "pw")
    assert sorted(reopened.index["projects"]) == [f"P{n}" for n in range(5)]
