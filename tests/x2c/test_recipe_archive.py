"""A hostile result archive on Y fails the experiment and nothing reaches XNAT (issue 9).

The job runs for real (demo pipeline, zip or tar.gz), locally with the local scheduler or on
the test cluster over SSH with SLURM. Then the archive on Y is replaced by a hostile one and
``run.env`` is made to match it, as a compromised container (or someone with write access to
the job directory) would: collect must refuse it with the member named, and the server must
have received no write.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.archives import TAR_HOSTILE, ZIP_HOSTILE, tar_bytes, zip_bytes
from tests.fixtures.cluster import Cluster
from tests.fixtures.xnat_data import add_session, xnat_config
from tests.x2c.helpers import QUICK, VENV_BIN, wait_for_job
from x2c import recipe
from x2c.config import HostConfig, SchedulerConfig
from x2c.errors import UnsafeArchiveError
from x2c.pipelines import builtin_pipeline
from x2c.recipe import Runtime
from x2c.settings import Settings, XnatSource
from x2c.xnat import path_of


def _tgz_pipeline(tmp: Path) -> str:
    """The demo pipeline packing a tar.gz under its own name and resource."""
    data = builtin_pipeline("demo").model_dump(mode="json", exclude_none=True)
    data.update(name="demo-tgz", archive="DEMO_TGZ", resource="DEMO_TGZ", archive_format="tar.gz")
    path = tmp / "demo-tgz.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _links_pipeline(tmp: Path) -> str:
    """A bare pipeline whose declared output is a symbolic link to a file outside the job."""
    data = {
        "name": "links",
        "version": "1",
        "inputs": {"scan_types": ["T1*"], "resource": "NIFTI", "pick": "first"},
        "image": "none",
        "runtime": "none",
        "command": ["ln", "-s", "/etc/hostname", "{outputs}/result.txt"],
        "outputs": ["result.txt"],
        "archive": "LINKS",
        "resource": "LINKS",
    }
    path = tmp / "links.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _host(kind: str, tmp: Path, request: pytest.FixtureRequest) -> HostConfig:
    if kind == "local":
        return HostConfig(
            name="y",
            workdir=str(tmp / "work dir"),
            scheduler=SchedulerConfig(kind="local", max_local_jobs=2, **QUICK),
            path_prepend=(VENV_BIN,),
        )
    cluster: Cluster = request.getfixturevalue("cluster")
    return HostConfig(
        name="y",
        ssh=cluster.alias,
        ssh_config=cluster.ssh_config,
        known_hosts=cluster.known_hosts,
        workdir=str(tmp / "scratch"),
        scheduler=SchedulerConfig(kind="slurm", extra_args=("--oversubscribe",), **QUICK),
        path_prepend=(VENV_BIN,),
    )


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.cluster)])
def rt(request: pytest.FixtureRequest, xnat_server: Any, tmp_path: Path) -> Iterator[Runtime]:
    settings = Settings(
        xnat=XnatSource(url=xnat_server.url, user=xnat_server.user),
        hosts={"y": _host(request.param, tmp_path, request)},
        pipelines=("demo", _tgz_pipeline(tmp_path), _links_pipeline(tmp_path)),
        state_dir=tmp_path / "state",
    )
    runtime = Runtime(settings, xnat_config(xnat_server))
    yield runtime
    runtime.close()


def _writes(server: Any) -> int:
    return sum(
        count
        for key, count in server.request_counts().items()
        if not key.startswith(("GET", "HEAD")) and not key.split(" ", 1)[1].startswith("/x2c")
    )


def _plant(rt: Runtime, t: recipe.Target, archive: str, data: bytes) -> None:
    """Replace the job's archive on Y and make run.env agree, as a hostile job would."""
    host = rt.host(t.host)
    jobdir = recipe.handle(rt, t).jobdir
    host.write_atomic(jobdir.archive(archive), data)
    old = (host.read_bytes(jobdir.run_info) or b"").decode()
    kept = [
        line for line in old.splitlines() if not line.startswith(("archive_md5=", "archive_size="))
    ]
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    kept += [f"archive_md5={md5}", f"archive_size={len(data)}"]
    host.write_atomic(jobdir.run_info, ("\n".join(kept) + "\n").encode())


@pytest.mark.parametrize(
    ("pipeline", "archive", "hostile", "build"),
    [
        ("demo", "DEMO_STATS.zip", ZIP_HOSTILE, zip_bytes),
        ("demo-tgz", "DEMO_TGZ.tar.gz", TAR_HOSTILE, tar_bytes),
    ],
)
def test_a_hostile_archive_fails_the_experiment_and_nothing_is_uploaded(
    rt: Runtime,
    xnat_server: Any,
    pipeline: str,
    archive: str,
    hostile: dict[str, str],
    build: Any,
) -> None:
    project = xnat_server.new_project("HOS")
    eid = add_session(xnat_server, project, "A1", "A1_MR1")
    [t] = recipe.targets(rt, project, pipeline, "y", [eid])
    h = recipe.handle(rt, t)
    selection = recipe.select(h)
    recipe.stage(h, selection)
    spec = recipe.build(h, selection)
    recipe.submit(h, spec)
    assert wait_for_job(rt, t).state == "COMPLETED"
    resource = rt.pipeline(pipeline).resource
    before = _writes(xnat_server)
    for kind, member in hostile.items():
        _plant(rt, t, archive, build(kind))
        with pytest.raises(UnsafeArchiveError) as info:
            recipe.upload(h, recipe.collect(h))
        assert info.value.member == member, kind
        assert repr(member) in str(info.value)
    assert _writes(xnat_server) == before, "nothing was written to XNAT"
    listed = rt.xnat.result_set(path_of("data", "experiments", eid, "resources"), what="list")
    assert resource not in {row.get("label") for row in listed}
    # the job's own, benign archive of the same shape goes through: the check is not the cause
    _plant(rt, t, archive, build(None))
    receipt = recipe.upload(h, recipe.collect(h))
    assert [f.path for f in receipt.files] == [archive]


def test_an_output_link_leaving_the_job_fails_the_job_by_name(
    rt: Runtime, xnat_server: Any
) -> None:
    """Issue 9, item 3: through the real scheduler (local, or SLURM over SSH), a declared output
    that is a symbolic link out of the job directory fails the job naming it; nothing is
    packed and nothing reaches XNAT."""
    project = xnat_server.new_project("LNK")
    eid = add_session(xnat_server, project, "L1", "L1_MR1")
    [t] = recipe.targets(rt, project, "links", "y", [eid])
    h = recipe.handle(rt, t)
    selection = recipe.select(h)
    recipe.stage(h, selection)
    before = _writes(xnat_server)
    recipe.submit(h, recipe.build(h, selection))
    record = wait_for_job(rt, t)
    assert (record.state, record.exit_code) == ("FAILED", 65), record
    assert "output result.txt is a symbolic link to /etc/hostname" in record.log_tail
    assert not rt.host(t.host).exists(h.jobdir.archive("LINKS.zip"))
    assert _writes(xnat_server) == before
