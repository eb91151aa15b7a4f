"""The schedulers and the per-pass poll through x2c's real SSH runner to the test cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.cluster import Cluster
from tests.x2c.schedulers.conftest import CountingRunner, follow, job_script
from x2c.config import HostConfig, SchedulerConfig
from x2c.hosts import Host, open_host
from x2c.schedulers.local import LocalScheduler
from x2c.schedulers.slurm import SlurmScheduler

pytestmark = pytest.mark.cluster

CFG = SchedulerConfig(
    kind="slurm",
    extra_args=("--oversubscribe",),
    exit_marker_grace_s=10,
    max_local_jobs=2,
)


@pytest.fixture
def host(cluster: Cluster) -> Iterator[Host]:
    cfg = HostConfig(
        name="testcluster",
        ssh=cluster.alias,
        ssh_config=cluster.ssh_config,
        known_hosts=cluster.known_hosts,
        workdir="/tmp",
    )
    with open_host(cfg) as h:
        yield h


def test_slurm_jobs_polled_over_ssh_in_one_call(host: Host, tmp_path: Path) -> None:
    runner = CountingRunner(host.runner)
    sched = SlurmScheduler(runner, CFG)
    specs = [job_script(tmp_path, f"ssh-{i}", f"exit {i % 2 * 3}", mem_mb=20) for i in range(6)]
    ids = [sched.submit(s) for s in specs]
    try:
        outcomes, polls = follow(sched, list(zip(ids, specs, strict=True)), timeout=150)
    finally:
        sched.cancel(ids)
    assert [(o.state, o.exit_code) for o in outcomes] == [("COMPLETED", 0), ("FAILED", 3)] * 3
    assert all(f"start ssh-{i}" in o.log_tail for i, o in enumerate(outcomes) if i % 2)
    assert runner.counts["squeue"] == polls  # one status call per poll for all six jobs


def test_local_scheduler_runs_through_the_ssh_runner(host: Host, tmp_path: Path) -> None:
    state = tmp_path / "it's the state"
    sched = LocalScheduler(host.runner, CFG, str(state))
    spec = job_script(tmp_path, "remote-local", "echo over ssh; exit 5")
    [out], _ = follow(sched, [(sched.submit(spec), spec)], timeout=60)
    assert (out.state, out.exit_code) == ("FAILED", 5)
    assert "over ssh" in out.log_tail
