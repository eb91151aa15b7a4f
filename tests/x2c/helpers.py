"""Shared pieces of the x2c-level pass tests (local scheduler and SSH + SLURM): settings for
each host, the jobs each scheduler holds for an experiment, a condition polled with a deadline,
passes run until a scope is final, and a pass killed partway and finished by the next passes
(the crash table of x2c.recipe)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tests.fixtures.cluster import Cluster
from tests.fixtures.xnat_data import put
from tests.x2c.schedulers.conftest import CountingRunner
from x2c import claims, recipe, reconcile
from x2c import jobdir as jd
from x2c.config import HostConfig, SchedulerConfig
from x2c.recipe import Runtime, Target, registry
from x2c.recipe.submit import submitting
from x2c.reconcile import Row, ScopeEntry
from x2c.schedulers import JobSpec
from x2c.settings import Settings, XnatSource

DATA = Path(__file__).resolve().parents[1] / "data" / "settings"
VENV_BIN = str(Path(sys.executable).parent)
QUICK = {"exit_marker_grace_s": 3.0}
"""Scheduler settings that keep the tests short."""
STALE_S = 2.0
"""``claim_stale_s`` in the pass tests: a claim not renewed for 2 s was left by a crash."""

T = TypeVar("T")


def make_settings(server: Any, tmp: Path, host: HostConfig, **fields: Any) -> Settings:
    """Settings with ``host``, the demo pipeline and tests' ``failing`` one, state under tmp."""
    return Settings(
        xnat=XnatSource(url=server.url, user=server.user),
        hosts={host.name: host},
        pipelines=("demo", str(DATA / "failing.yaml")),
        state_dir=tmp / "state",
        **fields,
    )


def local_host(tmp: Path, **fields: Any) -> HostConfig:
    """The local machine with the local scheduler (2 slots); the demo runs bare (runtime none)
    on this venv's python. ``fields`` override HostConfig fields (``claim_stale_s``...)."""
    return HostConfig(
        name="local",
        workdir=str(tmp / "work dir"),
        scheduler=SchedulerConfig(kind="local", max_local_jobs=2, **QUICK),
        path_prepend=(VENV_BIN,),
        **fields,
    )


def cluster_host(cluster: Cluster, tmp: Path, **fields: Any) -> HostConfig:
    """The test cluster's login node over SSH with its real SLURM (the job runs on this same
    machine, so the venv's python works through ``path_prepend``)."""
    return HostConfig(
        name="cluster",
        ssh=cluster.alias,
        ssh_config=cluster.ssh_config,
        known_hosts=cluster.known_hosts,
        workdir=str(tmp / "scratch"),
        scheduler=SchedulerConfig(kind="slurm", extra_args=("--oversubscribe",), **QUICK),
        path_prepend=(VENV_BIN,),
        **fields,
    )


def until(check: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """Call ``check`` until it returns something truthy (returned), or fail after ``timeout``
    seconds: the only way these tests wait."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def drive(
    rt: Runtime,
    scope: Sequence[ScopeEntry],
    *,
    timeout: float = 120.0,
    seen: list[list[Row]] | None = None,
    **options: Any,
) -> list[Row]:
    """Run passes until every experiment of ``scope`` is final (done, skipped or failed);
    each pass's rows are appended to ``seen`` when given."""
    deadline = time.monotonic() + timeout
    while True:
        rows = reconcile.run_pass(rt, scope, **options)
        options.pop("retry_failed", None)
        if seen is not None:
            seen.append(rows)
        if rows and all(r.final for r in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"not final after {timeout} s: {rows}")
        time.sleep(0.2)


def target_for(rt: Runtime, project: str, eid: str, pipeline: str = "demo") -> Target:
    """The one target of experiment ``eid`` (one listing request)."""
    [host] = rt.settings.hosts
    [t] = recipe.targets(rt, project, pipeline, host, [eid])
    return t


def scope_for(t: Target) -> list[ScopeEntry]:
    """The scope of exactly ``t``."""
    return [ScopeEntry(t.project, t.pipeline, t.host, (t.experiment,))]


def jobdir_of(rt: Runtime, t: Target) -> jd.JobDir:
    """``t``'s job directory on its host."""
    return recipe.handle(rt, t).jobdir


def local_jobs(rt: Runtime, t: Target) -> list[str]:
    """Every job the local scheduler ever queued for ``t``'s experiment (its state dir keeps
    them all)."""
    state = Path(rt.host_config(t.host).workdir) / ".x2c-local"
    if not state.is_dir():
        return []
    return sorted(
        d.name
        for d in state.iterdir()
        if (d / "tag").is_file() and f".{t.experiment}." in (d / "tag").read_text()
    )


def slurm_jobs(rt: Runtime, t: Target) -> list[str]:
    """Jobs SLURM still lists (any state) for ``t``'s job directory. Matched on the working
    directory, not the experiment ID: other test sessions' devxnat servers hand out the same
    IDs, and their jobs share this SLURM. SLURM forgets a job MinJobAge (5 s) after it ends:
    count submissions with :func:`count_commands` instead."""
    done = subprocess.run(
        ["squeue", "-h", "--me", "--states=all", "--format=%i|%Z"],
        capture_output=True,
        text=True,
        check=True,
    )
    root = jobdir_of(rt, t).root
    rows = [line.split("|", 1) for line in done.stdout.splitlines() if "|" in line]
    return [job for job, workdir in rows if workdir == root]


def count_commands(rt: Runtime, host: str) -> CountingRunner:
    """Count every command the runtime runs on ``host`` (claims, scheduler, probes) by program
    name: call before the runtime's first scheduler use of that host."""
    h = rt.host(host)
    runner = CountingRunner(h.runner)
    h.runner = runner
    return runner


# --- a pass killed partway ------------------------------------------------------------------


def claim(rt: Runtime, t: Target) -> None:
    """Take ``t``'s place on its host as a pass does (asserting it was granted)."""
    cfg = rt.host_config(t.host)
    rel = claims.relpath(cfg.workdir, t.pipeline, t.experiment)
    got = claims.reserve(
        rt.host(t.host), cfg.workdir, cap=cfg.max_in_flight, stale_s=cfg.claim_stale_s, new=[rel]
    )
    assert got.new == (rel,), got


def stale_claim(rt: Runtime, t: Target) -> claims.Claim:
    """Wait until ``t``'s claim on its host has not been renewed for its stale time; the claim
    as a pass's scan then finds it."""
    cfg = rt.host_config(t.host)
    rel = claims.relpath(cfg.workdir, t.pipeline, t.experiment)
    return until(
        lambda: (
            (c := claims.scan(rt.host(t.host), cfg.workdir)[rel]).age_s >= cfg.claim_stale_s and c
        ),
        f"the claim of {t.experiment} to go stale",
    )


def record_submitting(rt: Runtime, t: Target, spec: JobSpec) -> None:
    """Write the registry entry :func:`x2c.recipe.submit` writes before it calls the
    scheduler: ``submitting``, with the build's tag and no job id."""
    h = recipe.handle(rt, t)
    registry.write(h, submitting(h, spec))


def ended(rt: Runtime, t: Target) -> bool:
    """True once ``t``'s job script has written its exit marker."""
    return rt.host(t.host).exists(jobdir_of(rt, t).exit_code)


def polls_expected(passes: Sequence[Sequence[Row]]) -> list[int]:
    """The scheduler polls each of ``passes`` should make: one when the pass before left a
    job in the queue (submitted, attached, escalated), none otherwise (a pass that only
    verifies uploads polls nothing). The first pass is taken to follow none."""
    live = ("submit", "attach", "escalate")
    return [0] + [int(any(r.action in live for r in prev)) for prev in passes[:-1]]


def row_of(rows: list[Row], t: Target) -> Row:
    """``t``'s row among a pass's rows."""
    [row] = [r for r in rows if r.experiment == t.experiment]
    return row


def finish_after_crash(rt: Runtime, t: Target, waiting: str) -> Row:
    """The passes after a crash: the first, at once, waits (``waiting`` in its reason) because
    the crashed pass's claim is fresh; a later one acts only once the claim is
    ``claim_stale_s`` old, then passes run until the experiment is final. Returns the row of
    the pass that acted."""
    root = jobdir_of(rt, t).root  # the crashed pass's last sign of life: its claims renewed
    rt.host(t.host).runner.run(["touch", "-c", "--", f"{root}/inflight", f"{root}/finishing"])
    renewed = time.monotonic()
    first = row_of(reconcile.run_pass(rt, scope_for(t)), t)
    assert (first.state, first.action) == ("in flight", "wait"), first
    assert waiting in first.reason, first

    def acted() -> Row | None:
        row = row_of(reconcile.run_pass(rt, scope_for(t)), t)
        return None if row.action == "wait" else row

    row = until(acted, "a pass to take the stale claim over")
    stale_s = rt.host_config(t.host).claim_stale_s
    assert time.monotonic() - renewed >= stale_s - 1  # whole seconds on Y's clock
    if not row.final:
        drive(rt, scope_for(t))
    return row


BEFORE_THE_JOB_ID = ("claim", "select", "stage", "build", "submitting", "sbatch")
"""Where a pass can die before the registry knows its job: the next passes wait for the claim
to go stale, then resolve it (``find(tag)``, the exit marker) or launch again."""
WHILE_FINISHING = ("mid-upload", "uploaded", "upload-unrecorded")
"""Where a pass can die holding the finishing claim: the next passes wait for it to go stale."""


def crash_at(rt: Runtime, t: Target, point: str) -> str | None:
    """Run a pass's steps for ``t`` and stop dead at ``point``, a row of the crash table in
    x2c/recipe/__init__.py: after its claim (``claim``), after ``select``, ``stage`` or ``build``,
    after recording ``submitting``, after the scheduler ran (``sbatch``: the registry never
    got the job id), after the job ``ended`` (nobody polled it), with the upload cut halfway
    (``mid-upload``: a resource without provenance), after the verified upload (``uploaded``;
    ``upload-unrecorded``: the registry still says COMPLETED). Returns the job submitted, if
    any."""
    h = recipe.handle(rt, t)
    claim(rt, t)
    if point in ("ended", *WHILE_FINISHING):
        job = reconcile.launch(rt, t).job_id
        until(lambda: ended(rt, t), "the job to end", timeout=150)
        if point == "ended":
            return job
        found = reconcile.survey(rt, scope_for(t))  # records the job COMPLETED
        assert found.finish == [t], found
        cfg = rt.host_config(t.host)
        rel = claims.relpath(cfg.workdir, t.pipeline, t.experiment)
        assert claims.take_finishing(rt.host(t.host), cfg.workdir, rel, stale_s=cfg.claim_stale_s)
        resource = (
            "data",
            "experiments",
            t.experiment,
            "resources",
            rt.pipeline(t.pipeline).resource,
        )
        if point == "mid-upload":
            put(rt.xnat, *resource)
            put(rt.xnat, *resource, "files", "part.zip", params={"inbody": "true"}, body=b"part")
            return job
        recipe.upload(h, recipe.collect(h))
        if point == "upload-unrecorded":
            record = registry.read(h)
            assert record is not None and record.state == "uploaded"
            stale = record.model_copy(update={"state": "COMPLETED"})
            rt.host(t.host).write_atomic(h.jobdir.registry, jd.encode_record(stale))
        return job
    assert point in BEFORE_THE_JOB_ID, point
    if point == "claim":
        return None
    selection = recipe.select(h)
    if point == "select":
        return None
    recipe.stage(h, selection)
    if point == "stage":
        return None
    spec = recipe.build(h, selection)
    if point == "build":
        return None
    record_submitting(rt, t, spec)
    if point == "submitting":
        return None
    return rt.scheduler(t.host).submit(spec)


def wait_for_job(rt: Runtime, t: Target, timeout: float = 120.0) -> jd.JobRecord:
    """Poll ``t``'s job the way a pass does (one status call, the one end rule) and record
    what changed in its registry entry, until the job has ended; the final entry."""
    from x2c.poller import Watched, is_live, poll_jobs

    h = recipe.handle(rt, t)
    jobdir, host = h.jobdir, h.host

    def ended_record() -> jd.JobRecord | None:
        record = registry.read(h)
        assert record is not None, f"no job recorded for {t.label}"
        changed = poll_jobs(rt.scheduler(t.host), {"job": Watched(record, jobdir)}, time.time())
        if "job" in changed:
            record = changed["job"]
            host.write_atomic(jobdir.registry, jd.encode_record(record))
        return None if is_live(record.state) else record

    return until(ended_record, f"job of {t.label} to end", timeout=timeout)
