"""SLURM job arrays with the real SLURM of the test cluster, over SSH: a pass submits its
experiments of one pipeline on one host as ONE ``sbatch --array``, and everything that holds for
a single job holds per task (registry entry, exit marker, output check, one squeue per pass,
crash recovery by ``find``); an escalated attempt goes alone; a host can opt out."""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import Cluster
from tests.fixtures.xnat_data import Requests, add_session, xnat_config
from tests.x2c.helpers import (
    STALE_S,
    claim,
    cluster_host,
    count_commands,
    drive,
    make_settings,
    polls_expected,
)
from tests.x2c.schedulers.conftest import CountingRunner
from x2c import claims, recipe, reconcile
from x2c.recipe import Runtime, Target, registry
from x2c.recipe.submit import ARRAYS
from x2c.reconcile import Prepared, ScopeEntry
from x2c.xnat import resource_status

pytestmark = pytest.mark.cluster


def _runtime(xnat_server: Any, cluster: Cluster, tmp_path: Path, **scheduler: Any) -> Runtime:
    host = cluster_host(cluster, tmp_path, claim_stale_s=STALE_S)
    host = host.model_copy(
        update={"scheduler": host.scheduler.model_copy(update=scheduler), "max_in_flight": 40}
    )
    return Runtime(make_settings(xnat_server, tmp_path, host), xnat_config(xnat_server))


@pytest.fixture
def rt(xnat_server: Any, cluster: Cluster, tmp_path: Path) -> Iterator[Runtime]:
    runtime = _runtime(xnat_server, cluster, tmp_path)
    yield runtime
    runtime.close()


@pytest.fixture
def commands(rt: Runtime) -> CountingRunner:
    return count_commands(rt, "cluster")


def _sessions(xnat_server: Any, n: int) -> tuple[str, list[ScopeEntry]]:
    project = xnat_server.new_project("ARR")
    for i in range(n):
        add_session(xnat_server, project, f"A{i}", f"A{i}_MR1", index=i + 1)
    return project, [ScopeEntry(project, "demo", "cluster")]


def _job_ids(rt: Runtime, targets: list[Target]) -> list[str]:
    """The job id each experiment's verified result names in its provenance."""
    ids = []
    for t in targets:
        status = resource_status(rt.xnat, t.experiment, "DEMO_STATS", "1.0.0")
        assert status.done and status.provenance is not None, (t.label, status.reason)
        ids.append(status.provenance["job"]["job_id"])
    return ids


def test_thirty_experiments_are_one_array_job(
    rt: Runtime, xnat_server: Any, commands: CountingRunner
) -> None:
    project, scope = _sessions(xnat_server, 30)
    first = reconcile.run_pass(rt, scope)
    assert {r.state for r in first} == {"in flight"}, first
    assert commands.counts["sbatch"] == 1, "30 experiments, one sbatch"
    assert commands.counts["scontrol"] == 1, "MaxArraySize asked once"
    assert all("(task of an array of 30)" in r.reason for r in first), first[0]
    assert commands.counts["squeue"] == 0
    seen: list[list[Any]] = []
    rows = drive(rt, scope, timeout=240, seen=seen)
    assert {r.state for r in rows} == {"done"}, [r for r in rows if r.state != "done"]
    polls = sum(polls_expected([first, *seen]))
    assert commands.counts["squeue"] == polls, "one squeue per pass covers every task"
    assert commands.counts["sbatch"] == 1
    targets = recipe.targets(rt, project, "demo", "cluster")
    ids = _job_ids(rt, targets)
    array = {i.partition("_")[0] for i in ids}
    assert len(array) == 1, f"every result came from one array job: {ids}"
    assert sorted(int(i.partition("_")[2]) for i in ids) == list(range(30))
    assert _array_dirs(rt) == [], "the array's directory goes with its last task"
    requests = Requests(xnat_server)
    requests.reset()
    again = reconcile.run_pass(rt, scope)
    assert {r.action for r in again} == {"skip_done"} and requests.uploads() == 0
    assert commands.counts["sbatch"] == 1


def _array_dirs(rt: Runtime) -> list[str]:
    """The array directories left under the cluster host's workdir."""
    root = posixpath.join(rt.host_config("cluster").workdir, ARRAYS)
    done = rt.host("cluster").runner.run(["ls", "-A", "--", root])
    return done.stdout.split() if done.returncode == 0 else []


class Killed(BaseException):
    """The pass dies here (not an error x2c catches)."""


def test_a_pass_killed_after_the_array_sbatch_is_resumed_with_no_duplicate_task(
    rt: Runtime, xnat_server: Any, commands: CountingRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash hit after ``sbatch --array``, before any registry entry got its job id: the
    next passes find every task by the array's tag and its index, and collect each one."""
    project, scope = _sessions(xnat_server, 4)
    targets = recipe.targets(rt, project, "demo", "cluster")
    for t in targets:
        claim(rt, t)
    prepared = [reconcile.prepare(rt, t) for t in targets]
    assert all(isinstance(p, Prepared) for p in prepared), prepared

    def die(*_: Any, **__: Any) -> None:
        raise Killed

    with monkeypatch.context() as m:
        m.setattr(registry, "update", die)
        [group] = reconcile.groups(rt, [p for p in prepared if isinstance(p, Prepared)])
        with pytest.raises(Killed):
            reconcile.submit_group(rt, group)
    assert commands.counts["sbatch"] == 1
    for t in targets:
        record = registry.read(recipe.handle(rt, t))
        assert record is not None and record.state == "submitting" and "@" in record.tag
    rows = drive(rt, scope, timeout=180)
    assert {r.state for r in rows} == {"done"}, rows
    assert commands.counts["sbatch"] == 1, "no task was submitted twice"
    ids = _job_ids(rt, targets)
    assert len({i.partition("_")[0] for i in ids}) == 1 and len(set(ids)) == 4, ids
    assert not any(claims.scan(rt.host("cluster"), rt.host_config("cluster").workdir))


def test_an_escalated_attempt_goes_alone_and_arrays_split_at_max_array_size(
    rt: Runtime,
) -> None:
    """Which submissions a pass makes: arrays of at most MaxArraySize tasks, grouped by
    pipeline and resources; an attempt that asks for more (an escalation) alone."""
    h = [recipe.handle(rt, Target("P", f"E{i}", f"L{i}", "S", "demo", "cluster")) for i in range(5)]
    spec = recipe.job_spec(h[0], "tag")
    items = [Prepared(x, replace(spec, tag=f"t{i}")) for i, x in enumerate(h)]
    bigger = replace(items[4], spec=replace(spec, mem_mb=spec.mem_mb * 2 + 1024))
    rt.scheduler("cluster")._max_array_size = 3  # type: ignore[attr-defined]
    sizes = [len(g) for g in reconcile.groups(rt, [*items[:4], bigger])]
    assert sorted(sizes) == [1, 1, 3], sizes
    assert reconcile.groups(rt, [bigger]) == [[bigger]]


def test_a_host_that_opts_out_of_arrays_gets_one_sbatch_per_experiment(
    xnat_server: Any, cluster: Cluster, tmp_path: Path
) -> None:
    rt = _runtime(xnat_server, cluster, tmp_path, arrays=False)
    try:
        commands = count_commands(rt, "cluster")
        _, scope = _sessions(xnat_server, 3)
        rows = drive(rt, scope, timeout=150)
        assert {r.state for r in rows} == {"done"}, rows
        assert commands.counts["sbatch"] == 3
        assert "_" not in "".join(r.job_id for r in rows)
    finally:
        rt.close()
