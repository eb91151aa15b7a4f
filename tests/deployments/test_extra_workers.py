"""The ``extra_workers`` helper (tests/fixtures/prefect_stack.py): a worker it starts takes a
deployment's run and runs it; ``kill9`` ends the worker and the processes of its group. The
deployment is on a work pool of this test's own, so no other worker can take the run."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from tests.fixtures.prefect_stack import ExtraWorkers, PrefectStack
from tests.flows.helpers import poll

FLOW = """
from prefect import flow


@flow(name="x2c-extra-worker-probe")
def probe(n: int) -> int:
    return n + 1
"""


def test_an_extra_worker_runs_a_deployment_and_kill9_ends_it(
    prefect_stack: PrefectStack, extra_workers: ExtraWorkers, tmp_path: Path
) -> None:
    (tmp_path / "probe.py").write_text(FLOW)
    pool = f"x2c-test-{uuid.uuid4().hex[:8]}"
    with prefect_stack.settings(), get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(
                name=pool,
                type="process",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            )
        )
        flow_id = client.create_flow_from_name("x2c-extra-worker-probe")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=pool,
            work_pool_name=pool,
            entrypoint="probe.py:probe",
            path=str(tmp_path),
        )
    try:
        extra_workers.pool = pool
        [name] = extra_workers.start(1)
        assert name in extra_workers.online()
        with prefect_stack.settings():
            run = run_deployment(deployment_id, parameters={"n": 41}, timeout=0)

            def finished() -> object:
                with get_client(sync_client=True) as client:
                    now = client.read_flow_run(run.id)
                return now if now.state and now.state.is_final() else None

            done = poll(finished, "the extra worker to run the probe", timeout=120)
        log = extra_workers.log_text(name)
        assert done.state is not None and done.state.is_completed(), f"{done.state}\n{log}"
        assert str(run.id) in log, f"worker {name} did not report the run:\n{log}"

        process = extra_workers.processes[name]
        extra_workers.kill9(name)
        assert process.returncode == -9
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 0)
            raise AssertionError(f"processes of worker {name}'s group are still running")
    finally:
        with prefect_stack.settings(), get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)
            for flow_run in client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
                )
            ):
                client.delete_flow_run(flow_run.id)
            with contextlib.suppress(ObjectNotFound):
                client.delete_work_pool(pool)
