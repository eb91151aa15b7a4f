"""Several workers on one pool, on the Prefect stack (PostgreSQL): passes of the ``reconcile``
flow taken by two workers at once hold the host's cap between them, and a worker killed with
``kill -9`` in the middle of a pass loses nothing: the next passes finish every experiment with
one job and one upload each.

The jobs hold until the test releases them, so the cap is counted exactly (the claims on the
host), not sampled. The deployment is on a work pool of this test's own, so only the test's two
workers take its runs."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from flows.reconcile import reconcile
from tests.deployments.conftest import ROOT, settings_with_cfg
from tests.fixtures.prefect_stack import ExtraWorkers, PrefectStack
from tests.fixtures.xnat_data import Requests, add_session
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import claims_on, hold_pipeline, poll
from x2c import recipe

CAP = 3
SESSIONS = 6
QUEUES = ["first", "second"]


def runs_of(deployment_id: UUID) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
            )
        )


def start_passes(
    deployment_id: UUID, settings: str, project: str, host: str, eids: list[str]
) -> list[UUID]:
    """One pass per experiment, as the watcher or a user starts them (not waited for), sent
    to the pool's two queues in turn (one worker on each), so both workers take some."""
    ids = []
    for k, eid in enumerate(eids):
        run = run_deployment(
            deployment_id,
            parameters={
                "settings_path": settings,
                "project": project,
                "pipeline": "hold",
                "host": host,
                "experiments": [eid],
            },
            work_queue_name=QUEUES[k % 2],
            timeout=0,
        )
        ids.append(run.id)
    return ids


def all_final(ids: list[UUID]) -> list[FlowRun] | None:
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(i) for i in ids]
    return runs if all(r.state and r.state.is_final() for r in runs) else None


def local_jobs(work: Path) -> list[str]:
    """Every job the local scheduler ever queued under ``work``, by its tag."""
    state = work / ".x2c-local"
    return sorted((d / "tag").read_text() for d in state.iterdir() if (d / "tag").is_file())


def test_two_workers_share_the_cap_and_a_killed_worker_loses_nothing(
    prefect_stack: PrefectStack,
    extra_workers: ExtraWorkers,
    xnat_server: XnatServer,
    tmp_path: Path,
) -> None:
    project = xnat_server.new_project("WRK")
    eids = [add_session(xnat_server, project, f"S{k}", f"S{k}_MR1") for k in range(SESSIONS)]
    host = f"local{project.lower()}"
    trace, release = tmp_path / "trace", tmp_path / "release"
    pipeline = hold_pipeline(tmp_path / "hold.yaml", trace, release)
    settings = settings_with_cfg(
        tmp_path, xnat_server, project, host, pipelines=[str(pipeline)], max_in_flight=CAP,
        max_local_jobs=SESSIONS,
    )  # fmt: skip
    data = yaml.safe_load(Path(settings).read_text())
    data["projects"] = [{"project": project, "pipeline": "hold", "host": host}]
    Path(settings).write_text(yaml.safe_dump(data))
    work = tmp_path / "work"
    pool = f"x2c-test-{uuid.uuid4().hex[:8]}"
    with prefect_stack.settings(), get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name=pool, type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )  # fmt: skip
        flow_id = client.create_flow_from_name("x2c-reconcile")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=pool,
            work_pool_name=pool,
            entrypoint="flows/reconcile.py:reconcile",
            path=str(ROOT),
        )
        for queue in QUEUES:
            client.create_work_queue(name=queue, work_pool_name=pool)
    requests = Requests(xnat_server)
    try:
        extra_workers.pool = pool
        w1, w2 = extra_workers.start(2, queues=QUEUES)
        with prefect_stack.settings():
            # six passes at once, one per session, spread over both workers
            first = start_passes(deployment_id, settings, project, host, eids)
            runs = poll(lambda: all_final(first), "the six passes to end", timeout=240)
            logs = {w: extra_workers.log_text(w, tail=None) for w in (w1, w2)}
            assert all(r.state is not None and r.state.is_completed() for r in runs), [
                (r.name, r.state) for r in runs
            ]
            by_worker = {w: [i for i in first if str(i) in logs[w]] for w in (w1, w2)}
            assert by_worker == {w1: first[0::2], w2: first[1::2]}, "each worker ran its queue's"
            # the cap held across both workers' passes: exactly CAP claimed, CAP jobs
            assert claims_on(work) == CAP
            assert len(local_jobs(work)) == CAP

            # again, and kill a worker in the middle of one of its passes
            requests.reset()
            second = start_passes(deployment_id, settings, project, host, eids)

            def taken_by_w1() -> UUID | None:
                """A pass the first worker has taken and not finished (starting or running)."""
                log = extra_workers.log_text(w1, tail=None)
                with get_client(sync_client=True) as client:
                    for run_id in second:
                        run = client.read_flow_run(run_id)
                        if str(run_id) in log and run.state and not run.state.is_final():
                            return run_id
                return None

            victim = poll(taken_by_w1, "a pass taken by the first worker", timeout=120)
            extra_workers.kill9(w1)
            release.touch()

        # the next passes (here, in this process) finish everything: one job, one upload each
        def finished() -> list[Any] | None:
            try:
                state = reconcile(
                    settings_path=settings, project=project, pipeline="hold", host=host,
                    return_state=True,
                )  # fmt: skip
                rows: list[Any] = state.result()
            finally:
                recipe.close_runtimes()
            return rows if all(r.final for r in rows) else None

        with prefect_stack.settings():
            rows = poll(finished, "passes to finish every experiment", timeout=240)
            with get_client(sync_client=True) as client:
                killed = client.read_flow_run(victim)
        assert {r.state for r in rows} == {"done"}, rows
        jobs = local_jobs(work)
        assert len(jobs) == SESSIONS, f"one job per experiment: {jobs}"
        assert all(sum(f".{e}." in j for j in jobs) == 1 for e in eids), jobs
        assert requests.uploads() == 2 * SESSIONS, requests.writes()  # archive + provenance
        print(f"\nthe killed worker's pass {killed.name}: {killed.state}")
    finally:
        extra_workers.stop()
        with prefect_stack.settings(), get_client(sync_client=True) as client:
            for run in runs_of(deployment_id):
                with contextlib.suppress(ObjectNotFound):
                    client.delete_flow_run(run.id)
            client.delete_deployment(deployment_id)
            with contextlib.suppress(ObjectNotFound):
                client.delete_work_pool(pool)
