"""The ``reconcile`` flow (a pass) on the local host with the local scheduler.

Jobs here hold until the test creates a release file, so a pass that returns while they are
blocked proves that passes never wait for a job, and "how many are in flight" is exact, not a
race: the places claimed on the host, and the jobs the scheduler holds, are counted directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.sorting import ArtifactSort

from tasks.report import history_key
from tests.fixtures.prefect_stack import PrefectStack
from tests.fixtures.xnat_data import add_session
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import (
    artifacts_by_key,
    claims_on,
    hold_settings,
    job_windows,
    max_overlap,
    one_pass,
    pass_state,
    passes_until_final,
    poll,
)
from x2c import recipe
from x2c.reconcile import Row


@pytest.fixture
def runtimes() -> Iterator[None]:
    yield
    recipe.close_runtimes()


def local_jobs(workdir: Path) -> dict[str, str]:
    """The local scheduler's jobs under ``workdir``: id -> queued / running / done."""
    state = workdir / ".x2c-local"
    out = {}
    for d in state.iterdir() if state.is_dir() else []:
        if (d / "rc").exists():
            out[d.name] = "done"
        elif (d / "launched").exists():
            out[d.name] = "running"
        elif (d / "queued").exists():
            out[d.name] = "queued"
    return out


def task_run_names(flow_run_id: Any) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return sorted(r.name for r in runs)


def history_versions(keys: list[str]) -> dict[str, list[str]]:
    """Every version of each history artifact in ``keys`` that exists, newest first."""
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)),
            sort=ArtifactSort.CREATED_DESC,
        )
    out: dict[str, list[str]] = {}
    for a in arts:
        out.setdefault(str(a.key), []).append(str(a.data))
    return out


def states(rows: Sequence[Row]) -> dict[str, str]:
    return {r.label: r.state for r in rows}


def test_passes_submit_into_free_places_and_collect_without_waiting(
    fresh_xnat_server: XnatServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runtimes: None,
    prefect_stack: PrefectStack,
) -> None:
    # on the stack's PostgreSQL: the task runs below reach the server as events, which the
    # SQLite harness, busy late in the suite, was seen to lose (a pass's runs never appeared)
    with prefect_stack.settings():
        server = fresh_xnat_server
        project = server.new_project("PASS")
        good = [add_session(server, project, f"S{k}", f"S{k}_MR1", index=k) for k in (1, 2, 3)]
        add_session(server, project, "S4", "S4_MR1", scan_type="DWI")
        failing = add_session(server, project, "FAIL5", "FAIL5_MR1")
        settings, trace, release = hold_settings(
            tmp_path, server, project, max_in_flight=2, max_local_jobs=5
        )
        monkeypatch.setenv("XNAT_PASS", server.password)
        work = tmp_path / "work"

        # the first pass claims the two free places, submits, and returns with the jobs blocked
        state = pass_state(settings)
        rows, first_run = state.result(), state.state_details.flow_run_id
        assert [r.action for r in rows].count("submit") == 2, rows
        assert claims_on(work) == 2
        assert sum(s != "done" for s in local_jobs(work).values()) == 2
        assert sorted(s for s in states(rows).values()) == ["in flight"] * 2 + ["pending"] * 3

        # passes while the jobs hold submit nothing more: the host is full
        rows = one_pass(settings)
        assert [r.action for r in rows].count("submit") == 0, rows
        assert claims_on(work) == 2

        release.touch()
        final = {r.experiment: r for r in passes_until_final(settings)}
        assert [final[e].state for e in good] == ["done"] * 3
        assert final[failing].state == "failed" and "exit 3" in final[failing].reason
        assert "failing on purpose" in final[failing].log_tail
        skipped = [r for r in final.values() if r.state == "skipped"]
        assert len(skipped) == 1 and "T1" in skipped[0].reason
        assert claims_on(work) == 0, "every place was given back"
        # the in-flight cap, measured from the jobs' own stamps: reached, never exceeded
        assert max_overlap(job_windows(trace)) == 2

        # each experiment's history: one version per ending (none for a submission or a skip)
        history = history_versions([history_key(r) for r in final.values()])
        assert {k: [v.split(" ", 1)[0] for v in vs] for k, vs in history.items()} == {
            history_key(r): ["**done**"] if r.state == "done" else ["**failed**"]
            for r in final.values()
            if r.state != "skipped"
        }, history

        # a pass over a finished project: one listing, nothing written, no job
        jobs_before = set(local_jobs(work))
        server.reset_counts()
        state = pass_state(settings)
        rows, last_run = state.result(), state.state_details.flow_run_id
        counts = {k: n for k, n in server.request_counts().items() if " /x2c" not in k}
        assert sum(counts.values()) == 1, counts
        assert set(local_jobs(work)) == jobs_before
        assert {r.action for r in rows} <= {"skip_done", "report_failed", ""}, rows
        arts = artifacts_by_key(last_run)
        table = arts["x2c-pass-all"]
        assert "x2c-pass-all-summary" in arts
        assert "3 done, 0 in flight, 0 pending, 1 skipped, 1 failed" in str(table.description)

        # the first pass is visible by name (its task runs reach the server as events, late)
        def recorded() -> list[str] | None:
            names = task_run_names(first_run)
            return names if len(names) >= 4 else None  # survey, claim-places, two submits

        names = poll(recorded, "the pass's task runs recorded", timeout=60)
        assert "survey" in names and "claim-places" in names
        assert sum(n.startswith("submit-") for n in names) == 2, names


def test_a_thousand_places_cost_no_more_threads_than_a_few(
    fresh_xnat_server: XnatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtimes: None
) -> None:
    """80 experiments, 60 places: the first pass fills exactly 60 places and returns while
    they run; every result lands; the orchestrator's threads do not grow with the jobs in
    flight; a last pass submits and uploads nothing."""
    server = fresh_xnat_server
    project = server.new_project("SCALE")
    eids = [add_session(server, project, f"S{k:02d}", f"S{k:02d}_MR1") for k in range(80)]
    settings, _, release = hold_settings(
        tmp_path, server, project, max_in_flight=60, max_local_jobs=20
    )
    monkeypatch.setenv("XNAT_PASS", server.password)
    work = tmp_path / "work"

    threads_before = threading.active_count()
    rows = one_pass(settings)
    assert claims_on(work) == 60
    assert [r.action for r in rows].count("submit") == 60
    assert len(local_jobs(work)) == 60
    threads_in_flight = threading.active_count()
    most = 60
    release.touch()
    deadline = time.monotonic() + 300
    while True:
        rows = one_pass(settings)
        most = max(most, claims_on(work))
        if all(r.final for r in rows):
            break
        assert time.monotonic() < deadline, states(rows)
    assert most == 60
    assert {r.experiment for r in rows if r.state == "done"} == set(eids)
    assert len(local_jobs(work)) == 80, "one job per experiment"
    # threads: the pass's bounded pool, whatever is in flight (60 here), never one per job
    assert threads_in_flight - threads_before <= 12, (threads_before, threads_in_flight)

    server.reset_counts()
    rows = one_pass(settings)
    writes = [k for k in server.request_counts() if not k.startswith(("GET", "HEAD"))]
    assert [k for k in writes if " /x2c" not in k] == []
    assert len(local_jobs(work)) == 80
