"""Provenance records: complete, JSON-serialisable, honest about unknowns, and free of secrets."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from x2c.jobdir import RunInfo
from x2c.jobscript import job_argv
from x2c.pipelines import builtin_pipeline
from x2c.provenance import REDACTED, build_provenance, public_url
from x2c.sources import FileRef

PASSWORD = "s3cr3t-Pa55"
TOKEN = "tok-abcdef123456"


def _record(**overrides: object) -> dict[str, object]:
    fs6 = builtin_pipeline("freesurfer6-hippocampal")
    argv = job_argv(
        fs6,
        job_dir="/w/fs6/E1",
        subject="sub-01",
        experiment="E1",
        inputs=["scans/2/NIFTI/t1.nii.gz"],
        runtime="apptainer",
    )
    kwargs: dict[str, object] = dict(
        runtime="apptainer",
        image_digest=None,
        argv=argv,
        inputs=[FileRef("scans/2/NIFTI/t1.nii.gz", 1234, "0" * 32)],
        scheduler="slurm",
        job_id="77",
        host="hpc",
        run=RunInfo(
            started_at="2026-01-01T00:00:00Z",
            ended_at="2026-01-01T05:00:00Z",
            node="node17",
            job_id="77",
            exit_code=0,
            archive_md5="f" * 32,
            archive_size=999,
        ),
        x2c_version="0.1.0",
        source_url=f"https://alice:{PASSWORD}@xnat.example.org:8443/xnat?token={TOKEN}#frag",
        project="P",
        subject="sub-01",
        experiment="E1",
        created_at=datetime(2026, 1, 1, 6, tzinfo=UTC),
    )
    kwargs.update(overrides)
    return build_provenance(fs6, **kwargs)  # type: ignore[arg-type]


def test_record_content() -> None:
    record = _record()
    assert record["pipeline"] == {
        "name": "freesurfer6-hippocampal",
        "version": "6.0.1-x2c.1",
        "resource": "FS6_HIPPO",
        "archive": "FS6_HIPPO.zip",
    }
    assert record["container"] == {
        "runtime": "apptainer",
        "image": "docker.io/freesurfer/freesurfer:6.0",
        "digest": None,  # unknown stays unknown
    }
    assert record["command"][0][:5] == ["recon-all", "-sd", "/x2c/outputs", "-s", "sub-01"]
    assert record["inputs"] == [{"path": "scans/2/NIFTI/t1.nii.gz", "size": 1234, "md5": "0" * 32}]
    assert record["job"] == {
        "scheduler": "slurm",
        "job_id": "77",
        "host": "hpc",
        "node": "node17",
        "exit_code": 0,
        "started_at": "2026-01-01T00:00:00Z",
        "ended_at": "2026-01-01T05:00:00Z",
        "attempts": [],  # escalated attempts and their resources (x2c.escalation)
    }
    assert record["archive"] == {"md5": "f" * 32, "size": 999, "measured": False}
    assert record["x2c_version"] == "0.1.0"
    assert record["created_at"] == "2026-01-01T06:00:00+00:00"
    assert record["source"]["xnat"] == "https://xnat.example.org:8443/xnat"  # type: ignore[index]
    assert json.loads(json.dumps(record)) == record


def test_no_run_info_means_nulls_not_guesses() -> None:
    record = _record(run=None, exit_code=None, job_id=None)
    assert record["job"]["node"] is None  # type: ignore[index]
    assert record["job"]["exit_code"] is None  # type: ignore[index]
    assert record["job"]["started_at"] is None  # type: ignore[index]
    assert record["archive"] == {"md5": None, "size": None, "measured": False}


def test_the_archive_as_collected_is_recorded_with_its_own_digest() -> None:
    """The digest measured on the host when the archive was checked wins over the job's own
    claim in run.env (issue 9: provenance certifies the archive that was uploaded)."""
    record = _record(archive=FileRef("FS6_HIPPO.zip", 4321, "a" * 32))
    assert record["archive"] == {"md5": "a" * 32, "size": 4321, "measured": True}


def test_no_secret_leaks() -> None:
    env = {"FS_LICENSE": "/lic", "XNAT_PASSWORD": PASSWORD, "api_token": TOKEN, "MY_SECRET": "x"}
    record = _record(env=env)
    text = json.dumps(record)
    assert PASSWORD not in text and TOKEN not in text and "alice" not in text
    assert record["env"] == {
        "FS_LICENSE": "/lic",
        "MY_SECRET": REDACTED,
        "XNAT_PASSWORD": REDACTED,
        "api_token": REDACTED,
    }


def test_public_url() -> None:
    assert public_url("http://u:p@h/x?q=1") == "http://h/x"
    assert public_url("https://xnat.org") == "https://xnat.org"
