"""Reconcile passes over the real SSH host of the test cluster with its real SLURM (the job runs
on this same machine, so the venv's python works through ``path_prepend``). Every command the
passes run on Y is counted: one ``squeue`` per pass whatever the number of jobs, one ``sbatch``
per pass (a job array; tests/x2c/test_arrays_slurm.py), crashes included."""

from __future__ import annotations

import os
import shlex
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import Cluster
from tests.fixtures.xnat_data import Requests, add_session, xnat_config
from tests.x2c.helpers import (
    STALE_S,
    WHILE_FINISHING,
    cluster_host,
    count_commands,
    crash_at,
    drive,
    ended,
    finish_after_crash,
    jobdir_of,
    make_settings,
    polls_expected,
    scope_for,
    slurm_jobs,
    until,
)
from tests.x2c.hosts.helpers import sshd_pids_for_client_port
from tests.x2c.schedulers.conftest import CountingRunner
from x2c import claims, recipe, reconcile
from x2c.errors import SSHConnectError
from x2c.plan import plan
from x2c.recipe import Runtime, Target
from x2c.reconcile import Row, ScopeEntry
from x2c.xnat import resource_status

pytestmark = pytest.mark.cluster


@pytest.fixture
def rt(xnat_server: Any, cluster: Cluster, tmp_path: Path) -> Iterator[Runtime]:
    host = cluster_host(cluster, tmp_path, claim_stale_s=STALE_S)
    runtime = Runtime(make_settings(xnat_server, tmp_path, host), xnat_config(xnat_server))
    yield runtime
    runtime.close()


@pytest.fixture
def commands(rt: Runtime) -> CountingRunner:
    """Every command the runtime runs on the cluster host, counted by program."""
    return count_commands(rt, "cluster")


def only_target(rt: Runtime, project: str) -> Target:
    [t] = recipe.targets(rt, project, "demo", "cluster")
    return t


def assert_done_by(rt: Runtime, t: Target, job: str | None = None) -> dict[str, Any]:
    """The verified result is on XNAT (made by ``job`` when given); its provenance."""
    status = resource_status(rt.xnat, t.experiment, "DEMO_STATS", "1.0.0")
    assert status.done and status.provenance is not None, status.reason
    assert status.provenance["job"]["scheduler"] == "slurm"
    if job is not None:
        assert status.provenance["job"]["job_id"] == job, "the result came from the one job"
    assert not rt.host("cluster").exists(jobdir_of(rt, t).root)
    return status.provenance


def test_passes_over_ssh_and_slurm_one_squeue_per_pass(
    rt: Runtime, xnat_server: Any, commands: CountingRunner
) -> None:
    project = xnat_server.new_project("RCS")
    for i in range(4):
        add_session(xnat_server, project, f"H{i}", f"H{i}_MR1", index=i + 1)
    scope = [ScopeEntry(project, "demo", "cluster")]
    squeues: list[int] = []
    passes: list[list[Row]] = []

    def one_pass() -> list[Row] | None:
        before = commands.counts["squeue"]
        rows = reconcile.run_pass(rt, scope)
        squeues.append(commands.counts["squeue"] - before)
        passes.append(rows)
        return rows if all(r.final for r in rows) else None

    rows = until(one_pass, "four experiments done", timeout=180)
    assert {r.state for r in rows} == {"done"}, rows
    # one poll for all jobs in every pass that has any in the queue, none in the others
    assert squeues == polls_expected(passes) and 1 in squeues, squeues
    assert commands.counts["sbatch"] == 1, "the four are one job array"
    targets = recipe.targets(rt, project, "demo", "cluster")
    for t in targets:
        prov = assert_done_by(rt, t)
        assert prov["job"]["node"]
        assert len(slurm_jobs(rt, t)) <= 1  # MinJobAge=5 may have purged it already

    requests = Requests(xnat_server)
    requests.reset()
    before = dict(commands.counts)
    again = reconcile.run_pass(rt, scope)
    assert {r.action for r in again} == {"skip_done"}
    assert requests.total() == 1, requests.counts()  # one listing: the ledger knows the rest
    assert commands.counts["squeue"] == before.get("squeue", 0), "nothing in flight: no poll"
    assert commands.counts["sbatch"] == 1


@pytest.mark.parametrize(
    "point", ["stage", "submitting", "sbatch", "ended", "mid-upload", "uploaded"]
)
def test_a_killed_pass_is_finished_with_one_sbatch_and_one_upload(
    rt: Runtime, xnat_server: Any, commands: CountingRunner, point: str
) -> None:
    """Rows of the crash table over SSH and SLURM (see test_recipe.py for every row with the
    local scheduler): the next passes wait for a fresh claim, then finish with the one job."""
    project = xnat_server.new_project("RCS")
    add_session(xnat_server, project, "H5", f"H5_{point}", index=5)
    t = only_target(rt, project)
    job = crash_at(rt, t, point)
    requests = Requests(xnat_server)
    requests.reset()
    if point == "ended":
        drive(rt, scope_for(t), timeout=150)
    else:
        waiting = "uploading its result" if point in WHILE_FINISHING else "staging and submitting"
        finish_after_crash(rt, t, waiting)
    assert_done_by(rt, t, job)
    assert commands.counts["sbatch"] == 1, "no second job was submitted"
    assert requests.uploads() == (0 if point == "uploaded" else 2), requests.counts()


def test_a_submission_whose_job_ran_and_left_squeue_is_collected(
    rt: Runtime, xnat_server: Any, commands: CountingRunner
) -> None:
    """The crash hit after sbatch; by the next passes the job has ended and SLURM has purged it
    (MinJobAge): find() sees nothing, the exit marker and run.env prove it ran: collected with
    its own job id, not submitted again."""
    project = xnat_server.new_project("RCS")
    add_session(xnat_server, project, "H6", "H6_MR1", index=6)
    t = only_target(rt, project)
    job = crash_at(rt, t, "sbatch")
    assert job is not None
    until(lambda: ended(rt, t) and not slurm_jobs(rt, t), f"job {job} to leave squeue", 120)
    row = finish_after_crash(rt, t, "another run is staging and submitting it")
    assert (row.state, row.action, row.job_id) == ("in flight", "verify", job), row
    assert_done_by(rt, t, job)
    assert commands.counts["sbatch"] == 1


def test_a_failed_slurm_job_is_reported_with_its_log(
    rt: Runtime, xnat_server: Any, commands: CountingRunner
) -> None:
    project = xnat_server.new_project("RCS")
    add_session(xnat_server, project, "F7", "F7_MR1", index=7)
    [t] = recipe.targets(rt, project, "failing", "cluster")
    [row] = drive(rt, scope_for(t), timeout=150)
    assert (row.state, row.action) == ("failed", "ended"), row
    assert "(exit 3)" in row.reason and "boom on F7" in row.log_tail
    [again] = reconcile.run_pass(rt, scope_for(t))
    assert (again.state, again.action) == ("failed", "report_failed")
    assert commands.counts["sbatch"] == 1
    assert not any(claims.scan(rt.host("cluster"), rt.host_config("cluster").workdir))


def test_plan_prints_the_sbatch_command(rt: Runtime, xnat_server: Any, cluster: Cluster) -> None:
    project = xnat_server.new_project("RCS")
    add_session(xnat_server, project, "H4", "H4_MR1", index=4)
    t = only_target(rt, project)
    text = "\n".join(plan(rt, t))
    jobdir = jobdir_of(rt, t)
    assert (
        f"submit: sbatch --parsable --job-name=x2c-demo-H4_MR1 --output={jobdir.scheduler_log}"
        in text
    )
    assert f"--comment=x2c.demo.{t.experiment}.<new>" in text and "--oversubscribe" in text
    assert f"-> {cluster.alias}:{shlex.quote(jobdir.root)}/inputs/scans/1-T1/NIFTI/T1.nii" in text
    assert xnat_server.password not in text
    assert not rt.host("cluster").exists(jobdir.root)
    assert slurm_jobs(rt, t) == []


def test_hostile_labels_over_slurm(
    rt: Runtime, xnat_server: Any, tmp_path: Path, commands: CountingRunner
) -> None:
    project = xnat_server.new_project("RCS")
    eid = add_session(xnat_server, project, "--wrap", "-J..Ωx", scan_type="T1 $(touch PWNED) `id`")
    t = only_target(rt, project)
    assert (t.subject, t.label) == ("--wrap", "-J..Ωx")
    [row] = drive(rt, scope_for(t), timeout=150)
    assert row.state == "done", row
    prov = assert_done_by(rt, t)
    assert prov["source"]["subject"] == "--wrap" and t.experiment == eid
    assert not list(tmp_path.rglob("PWNED*"))
    assert commands.counts["sbatch"] == 1


def test_a_connection_dropped_during_a_pass_is_retryable(
    rt: Runtime, xnat_server: Any, cluster: Cluster, tmp_path: Path
) -> None:
    """A pass reads the claims and registry on Y first: a drop during that read is
    SSHConnectError (the one error the tasks retry), and the next pass reconnects and goes
    on. The drop: this connection's sshd processes are frozen until keepalives give up,
    then killed."""
    quick = rt.host_config("cluster").model_copy(
        update={"keepalive_interval": 0.5, "keepalive_count_max": 2}
    )
    rt2 = Runtime(make_settings(xnat_server, tmp_path, quick), rt.xnat_config)
    try:
        project = xnat_server.new_project("RCS")
        add_session(xnat_server, project, "H9", "H9_MR1", index=9)
        t = only_target(rt2, project)
        host = rt2.host("cluster")
        client = host.fs.client
        pids = sshd_pids_for_client_port(cluster.port, client.get_extra_info("sockname")[1])
        assert pids
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            with pytest.raises(SSHConnectError, match="cluster"):
                reconcile.run_pass(rt2, scope_for(t))
            assert client.is_closed()
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        [row] = reconcile.run_pass(rt2, scope_for(t))
        assert (row.state, row.action) == ("in flight", "submit"), row
        assert host.generation == 1
        [done] = drive(rt2, scope_for(t), timeout=150)
        assert done.state == "done"
    finally:
        rt2.close()
