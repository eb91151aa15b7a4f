"""The recipe over the real SSH host of the test cluster with its real SLURM: the job runs on
this same machine, so the venv's python works through ``path_prepend``."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import Cluster
from tests.fixtures.xnat_data import add_session, xnat_config
from tests.x2c.hosts.helpers import sshd_pids_for_client_port
from tests.x2c.test_recipe import QUICK, VENV_BIN, Counter, cycle, make_settings
from x2c import jobdir as jd
from x2c import recipe
from x2c.config import HostConfig, SchedulerConfig
from x2c.errors import SSHConnectError
from x2c.recipe import Action, Runtime, Target
from x2c.xnat import resource_status

pytestmark = pytest.mark.cluster


@pytest.fixture
def rt(xnat_server: Any, cluster: Cluster, tmp_path: Path) -> Iterator[Runtime]:
    host = HostConfig(
        name="cluster",
        ssh=cluster.alias,
        ssh_config=cluster.ssh_config,
        known_hosts=cluster.known_hosts,
        workdir=str(tmp_path / "scratch"),
        scheduler=SchedulerConfig(kind="slurm", extra_args=("--oversubscribe",), **QUICK),
        path_prepend=(VENV_BIN,),
    )
    runtime = Runtime(make_settings(xnat_server, tmp_path, host), xnat_config(xnat_server))
    yield runtime
    runtime.close()


def slurm_jobs(rt: Runtime, t: Target) -> list[str]:
    """Jobs SLURM still lists (any state) for ``t``'s job directory. Matched on the working
    directory, not the experiment ID: other test sessions' devxnat servers hand out the same
    IDs, and their jobs share this SLURM."""
    done = subprocess.run(
        ["squeue", "-h", "--me", "--states=all", "--format=%i|%Z"],
        capture_output=True,
        text=True,
        check=True,
    )
    root = recipe._jobdir(rt, t).root
    rows = [line.split("|", 1) for line in done.stdout.splitlines() if "|" in line]
    return [job for job, workdir in rows if workdir == root]


def test_full_cycle_over_ssh_and_slurm(rt: Runtime, xnat_server: Any) -> None:
    project = xnat_server.new_project("RCS")
    eid = add_session(xnat_server, project, "H1", "H1_MR1")
    [t] = recipe.targets(rt, project, "demo", "cluster")
    receipt = cycle(rt, t)
    status = resource_status(rt.xnat, eid, "DEMO_STATS", "1.0.0")
    assert status.done and status.provenance is not None
    assert status.provenance["job"]["scheduler"] == "slurm"
    assert status.provenance["job"]["node"]
    assert [f.path for f in receipt.files] == ["DEMO_STATS.zip"]
    assert len(slurm_jobs(rt, t)) <= 1  # MinJobAge=5 may have purged it already

    counter = Counter(xnat_server)
    counter.reset()
    assert recipe.decide(rt, t).action is Action.SKIP_DONE
    assert counter.total() == 2


def test_crash_between_sbatch_and_the_registry_write_attaches(
    rt: Runtime, xnat_server: Any
) -> None:
    project = xnat_server.new_project("RCS")
    add_session(xnat_server, project, "H2", "H2_MR1", index=2)
    [t] = recipe.targets(rt, project, "demo", "cluster")
    host = rt.host("cluster")
    jobdir = recipe._jobdir(rt, t)
    selection = recipe.select(rt, t)
    recipe.stage(rt, t, selection)
    spec = recipe.build(rt, t, selection)
    record = jd.JobRecord.model_validate(
        {
            "job_id": "",
            "scheduler": "slurm",
            "host": "cluster",
            "pipeline": "demo",
            "version": "1.0.0",
            "experiment": t.experiment,
            "submitted_at": "2026-01-01T00:00:00Z",
            "state": "submitting",
            "tag": spec.tag,
        }
    )
    jd.write_record(host.fs, jobdir, record)
    job = rt.scheduler("cluster").submit(spec)  # sbatch ran; the registry never heard of it
    assert slurm_jobs(rt, t) == [job]  # listed until MinJobAge after it ends

    decision = recipe.decide(rt, t)
    assert decision.action in (Action.ATTACH, Action.COLLECT), decision
    assert decision.job_id == job
    assert slurm_jobs(rt, t) in ([job], [])  # purged after MinJobAge once it ended
    cycle(rt, t)
    status = resource_status(rt.xnat, t.experiment, "DEMO_STATS", "1.0.0")
    assert status.done and status.provenance is not None
    assert status.provenance["job"]["job_id"] == job, "the result came from the one job"
    assert set(slurm_jobs(rt, t)) <= {job}, "no second job was submitted"


def test_a_submission_whose_job_ran_and_left_squeue_is_collected(
    rt: Runtime, xnat_server: Any
) -> None:
    """The crash hit after sbatch; by the rerun the job has ended and SLURM has purged it
    (MinJobAge): find() sees nothing, the exit marker proves it ran, so COLLECT, not SUBMIT."""
    project = xnat_server.new_project("RCS")
    add_session(xnat_server, project, "H3", "H3_MR1", index=3)
    [t] = recipe.targets(rt, project, "demo", "cluster")
    host = rt.host("cluster")
    jobdir = recipe._jobdir(rt, t)
    selection = recipe.select(rt, t)
    recipe.stage(rt, t, selection)
    spec = recipe.build(rt, t, selection)
    record = jd.JobRecord.model_validate(
        {
            "job_id": "",
            "scheduler": "slurm",
            "host": "cluster",
            "pipeline": "demo",
            "version": "1.0.0",
            "experiment": t.experiment,
            "submitted_at": "2026-01-01T00:00:00Z",
            "state": "submitting",
            "tag": spec.tag,
        }
    )
    jd.write_record(host.fs, jobdir, record)
    job = rt.scheduler("cluster").submit(spec)
    assert slurm_jobs(rt, t) == [job]
    deadline = time.monotonic() + 120
    while slurm_jobs(rt, t) or not Path(jobdir.exit_code).exists():
        assert time.monotonic() < deadline, f"job {job} still listed by squeue after 120 s"
        time.sleep(0.5)

    decision = recipe.decide(rt, t)
    assert (decision.action, decision.job_id) == (Action.COLLECT, job), decision
    cycle(rt, t)
    status = resource_status(rt.xnat, t.experiment, "DEMO_STATS", "1.0.0")
    assert status.done and status.provenance is not None
    assert status.provenance["job"]["job_id"] == job


def test_plan_prints_the_sbatch_command(rt: Runtime, xnat_server: Any, cluster: Cluster) -> None:
    project = xnat_server.new_project("RCS")
    add_session(xnat_server, project, "H4", "H4_MR1", index=4)
    [t] = recipe.targets(rt, project, "demo", "cluster")
    text = "\n".join(recipe.plan(rt, t))
    jobdir = recipe._jobdir(rt, t)
    assert (
        f"submit: sbatch --parsable --job-name=x2c-demo-H4_MR1 --output={jobdir.scheduler_log}"
        in text
    )
    assert f"--comment=x2c.demo.{t.experiment}.<new>" in text and "--oversubscribe" in text
    assert f"-> {cluster.alias}:{shlex.quote(jobdir.root)}/inputs/scans/1-T1/NIFTI/T1.nii" in text
    assert xnat_server.password not in text
    assert not rt.host("cluster").fs.exists(jobdir.root)
    assert slurm_jobs(rt, t) == []


def test_hostile_labels_over_slurm(rt: Runtime, xnat_server: Any, tmp_path: Path) -> None:
    project = xnat_server.new_project("RCS")
    eid = add_session(xnat_server, project, "--wrap", "-J..Ωx", scan_type="T1 $(touch PWNED) `id`")
    [t] = recipe.targets(rt, project, "demo", "cluster")
    assert (t.subject, t.label) == ("--wrap", "-J..Ωx")
    cycle(rt, t)
    status = resource_status(rt.xnat, eid, "DEMO_STATS", "1.0.0")
    assert status.done and status.provenance is not None
    assert status.provenance["source"]["subject"] == "--wrap"
    assert not list(tmp_path.rglob("PWNED*"))


def test_a_connection_dropped_while_reading_the_registry_is_retryable(
    rt: Runtime, xnat_server: Any, cluster: Cluster, tmp_path: Path
) -> None:
    """decide() reads the job registry on Y: a drop during that read is SSHConnectError (the
    one error the tasks retry), and the retried decide reconnects and goes on. The drop:
    this connection's sshd processes are frozen until keepalives give up, then killed."""
    quick = rt.host_config("cluster").model_copy(
        update={"keepalive_interval": 0.5, "keepalive_count_max": 2}
    )
    rt2 = Runtime(make_settings(xnat_server, tmp_path, quick), rt.xnat_config)
    try:
        project = xnat_server.new_project("RCS")
        add_session(xnat_server, project, "H9", "H9_MR1", index=9)
        [t] = recipe.targets(rt2, project, "demo", "cluster")
        host = rt2.host("cluster")
        client = host.fs.client
        pids = sshd_pids_for_client_port(cluster.port, client.get_extra_info("sockname")[1])
        assert pids
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            with pytest.raises(SSHConnectError, match="cluster"):
                recipe.decide(rt2, t)
            assert client.is_closed()
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        assert recipe.decide(rt2, t).action is Action.SUBMIT
        assert host.generation == 1
    finally:
        rt2.close()
