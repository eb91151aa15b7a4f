"""A Prefect server crash in the middle of a pass, on the stack (PostgreSQL): the server is
killed (SIGKILL to its process group) while the pass is submitting its experiments, and
brought back by ``scripts/prefect-stack.sh up``. The pass's API calls wait for it (the Prefect
client retries a lost connection with back-off), and whatever the pass could not finish, the
next passes do: every experiment ends done, with one job and one upload each."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.deployments.conftest import settings_with_cfg
from tests.deployments.test_workers import local_jobs
from tests.fixtures.prefect_stack import PrefectStack
from tests.fixtures.xnat_data import Requests, add_session
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import passes_until_final
from x2c import recipe, reconcile

SESSIONS = 4


def test_a_server_killed_mid_pass_loses_nothing(
    prefect_stack: PrefectStack,
    xnat_server: XnatServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = xnat_server.new_project("RST")
    eids = [add_session(xnat_server, project, f"S{k}", f"S{k}_MR1") for k in range(SESSIONS)]
    host = f"local{project.lower()}"
    settings = settings_with_cfg(
        tmp_path, xnat_server, project, host, max_in_flight=SESSIONS, max_local_jobs=SESSIONS
    )
    requests = Requests(xnat_server)
    requests.reset()
    launch = reconcile.launch
    restarts: list[threading.Thread] = []
    lock = threading.Lock()

    def launch_and_crash_the_server(rt: Any, t: Any) -> Any:
        """The first launch of the pass kills the server, then starts it again beside."""
        with lock:
            if not restarts:
                prefect_stack.kill_server()
                restarts.append(threading.Thread(target=prefect_stack.up))
                restarts[0].start()
        return launch(rt, t)

    monkeypatch.setattr(reconcile, "launch", launch_and_crash_the_server)
    first: Any = None
    try:
        with prefect_stack.settings():
            from flows.reconcile import reconcile as reconcile_flow

            try:
                first = reconcile_flow(settings_path=settings, return_state=True)
            except Exception as exc:  # the pass may die of the outage: the next ones finish
                first = exc
            finally:
                recipe.close_runtimes()
            assert restarts, "the pass launched nothing: the server was never killed"
            restarts[0].join(timeout=300)
            assert prefect_stack.healthy(), "prefect-stack.sh up did not bring the server back"
            monkeypatch.setattr(reconcile, "launch", launch)
            rows = passes_until_final(Path(settings), timeout=240)
    finally:
        recipe.close_runtimes()
    assert {r.experiment: r.state for r in rows} == dict.fromkeys(eids, "done"), rows
    jobs = local_jobs(tmp_path / "work")
    assert len(jobs) == SESSIONS, f"one job per experiment: {jobs}"
    assert all(sum(f".{e}." in j for j in jobs) == 1 for e in eids), jobs
    assert requests.uploads() == 2 * SESSIONS, requests.writes()  # archive + provenance
    outcome = f"{first.type.value}: {first.message}" if hasattr(first, "type") else repr(first)
    print(f"\nthe pass the server was killed under: {outcome}")
