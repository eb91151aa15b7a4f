"""The job directory contract: safe paths, atomic registry, exit marker and run.env parsing."""

from __future__ import annotations

import posixpath
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from x2c import jobdir as jd
from x2c.config import HostConfig
from x2c.errors import PipelineError
from x2c.hosts import open_host


@pytest.mark.parametrize(
    "label", ["..", ".", "../../etc", "a/b", "a b", "x\ny", "$(id)", "`id`", "-rf", ".hidden"]
)
def test_hostile_labels_stay_one_component_below_workdir(label: str) -> None:
    d = jd.job_dir("/work/x2c", "demo", label)
    assert posixpath.dirname(d.root) == "/work/x2c/demo"
    name = posixpath.basename(d.root)
    assert name not in (".", "..") and not name.startswith(".")
    assert all(c.isalnum() or c in "._-" for c in name)


def test_distinct_labels_get_distinct_directories() -> None:
    names = {jd.safe_component(x) for x in ["a/b", "a_b", "a b", "a?b"]}
    assert len(names) == 4
    assert jd.safe_component("XNAT_E00001") == "XNAT_E00001"


def test_layout_paths() -> None:
    d = jd.job_dir("/w/", "demo", "E1")
    assert d.root == "/w/demo/E1"
    assert (d.inputs, d.outputs, d.script, d.log) == (
        "/w/demo/E1/inputs", "/w/demo/E1/outputs", "/w/demo/E1/job.sh", "/w/demo/E1/job.log"
    )  # fmt: skip
    assert (d.exit_code, d.registry, d.run_info, d.manifest) == (
        "/w/demo/E1/exit_code", "/w/demo/E1/job.json", "/w/demo/E1/run.env",
        "/w/demo/E1/manifest.md5",
    )  # fmt: skip
    assert d.scheduler_log == "/w/demo/E1/scheduler.log"
    assert d.archive("FS6_HIPPO.zip") == "/w/demo/E1/FS6_HIPPO.zip"
    assert d.input("scans/2-T1w/NIFTI/x.nii.gz") == "/w/demo/E1/inputs/scans/2-T1w/NIFTI/x.nii.gz"
    for bad in ("../x", "/etc/passwd", "a/../../b", "", "."):
        with pytest.raises(PipelineError, match="not a relative path inside"):
            d.input(bad)
    with pytest.raises(PipelineError, match="absolute"):
        jd.job_dir("relative", "demo", "E1")
    with pytest.raises(PipelineError, match="empty label"):
        jd.job_dir("/w", "demo", "")


def _record(state: str) -> jd.JobRecord:
    return jd.JobRecord(
        job_id="42",
        scheduler="slurm",
        host="hpc",
        pipeline="demo",
        version="1.0.0",
        experiment="E1",
        submitted_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        state=state,
    )


def test_registry_round_trip_is_atomic_and_replaces(tmp_path: Path) -> None:
    fs = LocalFileSystem()
    d = jd.job_dir(str(tmp_path), "demo", "E1")
    Path(d.root).mkdir(parents=True)
    assert jd.read_record(fs, d) is None
    jd.write_record(fs, d, _record("QUEUED"))
    jd.write_record(fs, d, _record("RUNNING"))
    got = jd.read_record(fs, d)
    assert got == _record("RUNNING")
    assert sorted(p.name for p in Path(d.root).iterdir()) == ["job.json"]  # no tmp left
    Path(d.registry).write_text('{"job_id": 1')
    with pytest.raises(PipelineError, match="corrupt"):
        jd.read_record(fs, d)


def test_writing_into_a_missing_directory_says_so(tmp_path: Path) -> None:
    d = jd.job_dir(str(tmp_path), "demo", "missing")
    with pytest.raises(Exception, match="could not write"):
        jd.write_record(LocalFileSystem(), d, _record("QUEUED"))


def test_exit_marker_and_run_info(tmp_path: Path) -> None:
    fs = LocalFileSystem()
    d = jd.job_dir(str(tmp_path), "demo", "E1")
    Path(d.root).mkdir(parents=True)
    assert jd.read_exit_code(fs, d) is None
    assert jd.read_run_info(fs, d) is None
    Path(d.exit_code).write_text("3\n")
    assert jd.read_exit_code(fs, d) == 3
    Path(d.exit_code).write_text("garbage")
    assert jd.read_exit_code(fs, d) is None
    Path(d.run_info).write_text(
        "started_at=2026-01-01T00:00:00Z\nnode=n1\njob_id=\nbogus line\n"
        "archive_md5=abc\narchive_size=12\nended_at=2026-01-01T00:01:00Z\nexit_code=0\n"
    )
    info = jd.read_run_info(fs, d)
    assert info == jd.RunInfo(
        started_at="2026-01-01T00:00:00Z",
        ended_at="2026-01-01T00:01:00Z",
        node="n1",
        job_id=None,
        exit_code=0,
        archive_md5="abc",
        archive_size=12,
    )


@pytest.mark.cluster
def test_registry_and_marker_over_sftp(tmp_path: Path, cluster: Any) -> None:
    """The same helpers work on the SSH host's fsspec filesystem (SFTP posix-rename)."""
    cfg = HostConfig(
        name="x2c-test",
        ssh=cluster.alias,
        ssh_config=cluster.ssh_config,
        known_hosts=cluster.known_hosts,
        workdir=str(tmp_path),
    )
    d = jd.job_dir(str(tmp_path), "demo", "E1/../../x")
    Path(d.root).mkdir(parents=True)
    with open_host(cfg) as host:
        assert jd.read_record(host.fs, d) is None
        jd.write_record(host.fs, d, _record("QUEUED"))
        jd.write_record(host.fs, d, _record("RUNNING"))
        assert jd.read_record(host.fs, d) == _record("RUNNING")
        assert jd.read_exit_code(host.fs, d) is None
        Path(d.exit_code).write_text("0\n")
        assert jd.read_exit_code(host.fs, d) == 0
    assert sorted(p.name for p in Path(d.root).iterdir()) == ["exit_code", "job.json"]
