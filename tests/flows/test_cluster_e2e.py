"""End to end over the real components: ``x2c devxnat`` + the real sshd + the real SLURM, through
``reconcile`` passes.

Five experiments with 2 places on the host: three good, one with no matching input (its only
scan is a DWI), one whose job fails (its "NIfTI" is not an image, so the demo pipeline exits
non-zero). Checked: the cap (SLURM's own queue sampled while the passes run), the results and
their provenance read back with unmodified pyxnat, the failure with its reason and log tail,
the skip with its reason; then a pass that only reads the ledger: no new SLURM job, no XNAT
write, one listing.

Then at scale: 80 experiments into 60 places, with jobs that hold until the test releases them:
the first pass leaves exactly 60 x2c jobs in SLURM's queue and returns; every pass asks SLURM
once (``squeue`` calls counted on the host's runner); every result lands; a second ``x2c run``
submits and uploads nothing.

It lives in tests/flows/ to share the one session-scoped Prefect harness of tests/flows/conftest.py
(a conftest elsewhere importing that fixture would start a second harness).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pyxnat import Interface

from tasks.runtime import open_runtime
from tests.fixtures.cluster import Cluster
from tests.fixtures.xnat_data import add_broken_session, add_session
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import (
    VENV_BIN,
    claims_on,
    hold_pipeline,
    one_pass,
    passes_until_final,
    pipeline_file,
)
from x2c import recipe
from x2c.reconcile import DONE, FAILED, SKIPPED

pytestmark = pytest.mark.cluster

LIMIT = 2


class QueueSampler:
    """Samples SLURM's queue (``squeue``) every 0.2 s in a thread: the most of OUR jobs (their
    working directory is under ``workdir``: other test runs share this SLURM) that were pending
    or running at once, and every one of our job ids seen (an array's tasks one by one)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = str(workdir) + "/"
        self.most = 0
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def ours(self, states: str) -> list[str]:
        """Our jobs SLURM lists in ``states`` (``all``: also those ended within MinJobAge)."""
        done = subprocess.run(
            ["squeue", "-h", "--me", "--array", f"--states={states}", "--format=%i|%Z"],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = [line.split("|", 1) for line in done.stdout.splitlines() if "|" in line]
        return [job for job, cwd in rows if (cwd.rstrip("/") + "/").startswith(self.workdir)]

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            live = self.ours("PENDING,CONFIGURING,RUNNING")
            self.most = max(self.most, len(live))
            self.seen.update(live)

    def __enter__(self) -> QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def cluster_settings(
    path: Path,
    server: XnatServer,
    cluster: Cluster,
    scratch: Path,
    *,
    limit: int = LIMIT,
    pipelines: tuple[str, ...] = ("demo",),
    keep: bool = True,
) -> Path:
    """Settings: host ``cluster`` over SSH (to the compute side's sshd, in the namespace that
    cannot reach XNAT) with SLURM, the demo pipeline run bare by this venv's
    python on the node (this machine), at most ``limit`` experiments in flight, job
    directories kept (their run.env and job.json are evidence). No password in the file:
    XNAT_PASS."""
    path.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": server.url, "user": server.user, "timeout": 20, "retries": 2},
                "hosts": {
                    "cluster": {
                        "ssh": cluster.compute_alias,
                        "ssh_config": str(cluster.ssh_config),
                        "known_hosts": str(cluster.known_hosts),
                        "workdir": str(scratch),
                        "scheduler": {
                            "kind": "slurm",
                            "extra_args": ["--oversubscribe"],
                            "poll_min_s": 0.2,
                            "poll_max_s": 1.0,
                            "exit_marker_grace_s": 3.0,
                        },
                        "container_runtime": "none",
                        "path_prepend": [VENV_BIN],
                        "max_in_flight": limit,
                    }
                },
                "pipelines": list(pipelines),
                "limits": {"xnat_transfers": 2},
                "state_dir": str(path.parent / "state"),
                "keep_workdir": keep,
            }
        )
    )
    return path


@pytest.fixture
def runtimes() -> Iterator[None]:
    yield
    recipe.close_runtimes()


def xnat_requests(server: XnatServer) -> tuple[int, dict[str, int]]:
    """(all requests to /data, the writes among them) since the last reset."""
    counts = {k: n for k, n in server.request_counts().items() if " /x2c" not in k}
    writes = {k: n for k, n in counts.items() if not k.startswith(("GET ", "HEAD "))}
    return sum(counts.values()), writes


def test_five_experiments_over_ssh_and_slurm_then_a_pass_that_only_checks(
    fresh_xnat_server: XnatServer,
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runtimes: None,
) -> None:
    server = fresh_xnat_server
    project = server.new_project("E2E")
    good = [add_session(server, project, f"S{k}", f"S{k}_MR1", index=k) for k in (1, 2, 3)]
    no_input = add_session(server, project, "S4", "S4_MR1", scan_type="DWI")
    broken = add_broken_session(server, project, "BROKEN5")
    everyone = [*good, no_input, broken]
    scratch = tmp_path / "scratch"  # on the cluster's login node, which is this machine
    settings = cluster_settings(tmp_path / "x2c.yaml", server, cluster, scratch)
    monkeypatch.setenv("XNAT_PASS", server.password)

    server.reset_counts()
    with QueueSampler(scratch) as queue:
        results = passes_until_final(settings, project=project, pipeline="demo", host="cluster")
    first_total, first_writes = xnat_requests(server)

    by_id = {r.experiment: r for r in results}
    assert [by_id[e].state for e in good] == [DONE, DONE, DONE]
    skip = by_id[no_input]
    assert skip.state == SKIPPED and skip.reason.startswith("skipped: "), skip
    assert "T1" in skip.reason, skip.reason  # says which selection found nothing
    fail = by_id[broken]
    assert fail.state == FAILED and fail.job_id, fail
    assert "exit" in fail.reason, fail.reason
    assert "demo_pipeline" in fail.log_tail or "nibabel" in fail.log_tail, fail.log_tail

    # the cap, measured in SLURM's queue (sampled): never above it
    assert 1 <= queue.most <= LIMIT, queue.most
    jobs = {r.experiment: r.job_id for r in results if r.job_id}
    assert set(jobs) == {*good, broken}
    assert len(set(jobs.values())) == 4, jobs
    assert queue.seen and queue.seen <= set(jobs.values()), (queue.seen, jobs)
    print(f"\nmax SLURM jobs queued or running at once: {queue.most} (cap {LIMIT})")

    # results and provenance on XNAT, read back with unmodified pyxnat
    intf = Interface(server=server.url, user=server.user, password=server.password)
    try:
        for eid in good:
            resource = intf.select.experiment(eid).resource("DEMO_STATS")
            assert resource.exists()
            files = {f.id(): f for f in resource.files()}
            assert set(files) == {"DEMO_STATS.zip", "provenance.json"}
            prov_path = tmp_path / f"{eid}-provenance.json"
            resource.file("provenance.json").get(str(prov_path))
            prov = json.loads(prov_path.read_text())
            zip_path = tmp_path / f"{eid}.zip"
            resource.file("DEMO_STATS.zip").get(str(zip_path))
            t1 = tmp_path / f"{eid}-T1.nii"
            intf.select.experiment(eid).scan("1").resource("NIFTI").file("T1.nii").get(str(t1))
            assert prov["schema"] == "x2c.provenance/1"
            assert prov["pipeline"]["name"] == "demo"
            assert prov["pipeline"]["version"] == "1.0.0"
            assert prov["job"]["scheduler"] == "slurm"
            assert prov["job"]["job_id"] == by_id[eid].job_id
            assert prov["job"]["host"] == "cluster" and prov["job"]["exit_code"] == 0
            assert prov["source"]["project"] == project
            assert prov["archive"]["md5"] == hashlib.md5(zip_path.read_bytes()).hexdigest()
            assert [i["md5"] for i in prov["inputs"]] == [hashlib.md5(t1.read_bytes()).hexdigest()]
            assert server.password not in prov_path.read_text()
        assert not intf.select.experiment(broken).resource("DEMO_STATS").exists()
        assert not intf.select.experiment(no_input).resource("DEMO_STATS").exists()
    finally:
        intf.disconnect()

    # what the host keeps: one registry entry per submitted job, with its own run record
    def records() -> dict[str, tuple[str, str]]:
        out = {}
        for eid in everyone:
            registry = scratch / "demo" / eid / "job.json"
            if registry.exists():
                rec = json.loads(registry.read_text())
                out[eid] = (rec["job_id"], rec["submitted_at"])
        return out

    first_records = records()
    assert {e: j for e, (j, _) in first_records.items()} == jobs
    for eid in good:
        assert "exit_code=0" in (scratch / "demo" / eid / "run.env").read_text()

    # a pass over the finished project: the ledger answers
    server.reset_counts()
    with QueueSampler(scratch) as again_queue:
        again = one_pass(settings, project=project, pipeline="demo", host="cluster")
    second_total, second_writes = xnat_requests(server)
    second = {r.experiment: r for r in again}
    assert {second[e].action for e in good} == {"skip_done"}
    assert [second[e].state for e in good] == [DONE, DONE, DONE]
    assert second[no_input].state == SKIPPED
    assert second[broken].state == FAILED
    assert "exit" in second[broken].reason
    assert records() == first_records, "no job was submitted again"
    assert again_queue.most == 0 and again_queue.seen == set()
    assert set(again_queue.ours("all")) <= set(jobs.values())
    assert second_writes == {}, second_writes
    assert first_writes, "the first batch uploaded"
    assert second_total == 1, "one listing; the ledger knows the rest"
    print(
        f"XNAT requests: first passes {first_total} ({first_total / 5:.1f} per experiment), "
        f"a pass over the finished project {second_total}"
    )


class CountingRunner:
    """Wraps a host's runner and counts the commands run through it by program name."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[str] = []

    def run(self, argv: list[str], **kw: Any) -> Any:
        self.calls.append(argv[0])
        return self.inner.run(argv, **kw)

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)


def test_eighty_experiments_into_sixty_places_on_slurm(
    fresh_xnat_server: XnatServer,
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runtimes: None,
) -> None:
    server = fresh_xnat_server
    project = server.new_project("SCL")
    eids = [add_session(server, project, f"S{k:02d}", f"S{k:02d}_MR1") for k in range(80)]
    trace, release = tmp_path / "trace", tmp_path / "release"
    pipeline = hold_pipeline(tmp_path / "hold.yaml", trace, release)
    scratch = tmp_path / "scratch"
    settings = cluster_settings(
        tmp_path / "x2c.yaml", server, cluster, scratch, limit=60, pipelines=(str(pipeline),),
        keep=False,
    )  # fmt: skip
    monkeypatch.setenv("XNAT_PASS", server.password)
    # count what the passes ask SLURM: the flows share this process's runtime and its host
    rt = open_runtime(str(settings))
    counting = CountingRunner(rt.host("cluster").runner)
    rt.host("cluster").runner = counting
    scope = {"project": project, "pipeline": "hold", "host": "cluster"}

    with QueueSampler(scratch) as queue:
        first = one_pass(settings, **scope)
        assert [r.action for r in first].count("submit") == 60
        assert counting.calls.count("sbatch") == 1, "the 60 are one job array"
        assert claims_on(scratch) == 60
        assert len(queue.ours("PENDING,CONFIGURING,RUNNING")) == 60, "all 60 queued at once"
        release.touch()
        passes, submitting = 1, 1
        deadline = time.monotonic() + 600
        while True:
            rows = one_pass(settings, **scope)
            passes += 1
            submitting += any(r.action == "submit" and r.state == "in flight" for r in rows)
            if all(r.final for r in rows):
                break
            assert time.monotonic() < deadline, {r.label: r.state for r in rows}
            time.sleep(0.5)
    assert queue.most == 60, queue.most
    assert {r.experiment for r in rows if r.state == DONE} == set(eids)
    squeues = counting.calls.count("squeue")
    assert squeues <= passes, (squeues, passes)
    assert counting.calls.count("sbatch") == submitting, "one array per pass that submitted"
    print(
        f"\n80 experiments, 60 places: {passes} passes, {squeues} squeue calls, "
        f"{counting.calls.count('sbatch')} sbatch calls, max queued {queue.most}"
    )

    counting.calls.clear()
    server.reset_counts()
    again = one_pass(settings, **scope)
    _, writes = xnat_requests(server)
    assert writes == {} and counting.calls.count("sbatch") == 0
    assert {r.state for r in again} == {DONE}


# no braces: the pipeline's command is a template ({outputs}). XNAT's address comes from a file:
# x2c refuses to write it into a job script.
_PROBE = """
import socket, sys
out = sys.argv[1]
with open(sys.argv[2]) as f:
    host, port = f.read().split()
port = int(port)
try:
    socket.create_connection((host, port), timeout=5).close()
    verdict, code = "reached %s:%d" % (host, port), 7
except OSError as exc:
    verdict, code = "unreachable %s:%d: %s" % (host, port, exc), 0
with open(out + "/probe.txt", "w") as f:
    f.write(verdict + "\\n")
sys.exit(code)
"""


def test_a_job_on_the_cluster_cannot_reach_xnat(
    fresh_xnat_server: XnatServer,
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runtimes: None,
) -> None:
    """The premise of x2c: the cluster cannot reach XNAT. The job tries XNAT's own address
    and port from the node (it exits 7 if it gets through); the result comes back anyway,
    carried by x2c through Z."""
    if not cluster.netns:
        message = (
            "the test cluster's compute side is on loopback (this machine refused network "
            "namespaces): a job here CAN reach XNAT, so the premise is not tested"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = fresh_xnat_server
    project = server.new_project("NET")
    eid = add_session(server, project, "S1", "S1_MR1")
    url = urlsplit(server.url)
    address = tmp_path / "xnat-address"  # this machine's files are the node's too
    address.write_text(f"{url.hostname} {url.port}\n")
    command = ["python", "-c", _PROBE, "{outputs}", str(address)]
    probe = pipeline_file(tmp_path / "probe.yaml", "probe", command, ["probe.txt"], "00:05:00")
    scratch = tmp_path / "scratch"
    settings = cluster_settings(
        tmp_path / "x2c.yaml", server, cluster, scratch, pipelines=(str(probe),)
    )
    monkeypatch.setenv("XNAT_PASS", server.password)
    [row] = passes_until_final(settings, project=project, pipeline="probe", host="cluster")
    verdict = (scratch / "probe" / eid / "outputs" / "probe.txt").read_text()
    assert row.state == DONE, (row, verdict)
    assert verdict.startswith(f"unreachable {url.hostname}:{url.port}"), verdict
    print(f"\nthe job on the cluster: {verdict.strip()}")
