"""Per-experiment orchestration overhead of the Prefect flows against the bare recipe.

    python bench/bench_flow_overhead.py [--experiments 50] [--parallel 10] [--heartbeat]

Starts a real ``x2c devxnat`` with ``--experiments`` demo sessions and a Prefect test harness
(temporary API on SQLite), then processes every session twice on the local host with the local
scheduler and a no-op job (writes one small file), in the same run and with the same
parallelism:

1. baseline: the recipe functions called directly (decide, select, stage, build, submit, wait,
   collect, upload, clean) from a thread pool of ``--parallel`` workers, pipeline ``noop-a``;
   then the same holding the flow's global concurrency slots (``noop-c``), which separates
   the cost of the limits (one slot request to the Prefect API each) from that of the runs;
2. Prefect: the ``process-experiments`` flow (one ``process-experiment`` flow run per session,
   one task per step, the per-host global concurrency limit set to ``--parallel``), pipeline
   ``noop-b`` (same job, its own result resource, so both do the full work).

Prints wall seconds per experiment for each, the overhead per experiment and the ratio, this
process's CPU seconds per experiment for each, Prefect runs (flow + task runs) per experiment,
and XNAT requests per experiment for each. ``--heartbeat`` keeps Prefect's default flow-run
heartbeat (each flow run then waits ~1 s for the heartbeat thread when it ends); by default it
is off, as in the tests.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NOOP = {
    "version": "1",
    "inputs": {"scan_types": ["T1*"], "resource": "NIFTI", "pick": "first"},
    "input_match": "*.nii*",
    "image": "none",
    "runtime": "none",
    "command": ["sh", "-c", 'echo ok > "$1/out.txt"', "noop", "{outputs}"],
    "walltime": "00:05:00",
    "outputs": ["out.txt"],
}


def write_settings(tmp: Path, server: Any, parallel: int) -> Path:
    pipelines = []
    for name in ("noop-a", "noop-b", "noop-c"):
        path = tmp / f"{name}.yaml"
        label = name.upper().replace("-", "_")
        path.write_text(yaml.safe_dump({"name": name, **NOOP, "archive": label, "resource": label}))
        pipelines.append(str(path))
    settings = {
        "xnat": {"url": server.url, "user": server.user},
        "hosts": {
            "local": {
                "workdir": str(tmp / "work"),
                "scheduler": {
                    "kind": "local",
                    "max_local_jobs": parallel,
                    "poll_min_s": 0.2,
                    "poll_max_s": 0.5,
                    "exit_marker_grace_s": 3.0,
                },
                "max_in_flight": parallel,
            }
        },
        "pipelines": pipelines,
        "limits": {"xnat_transfers": parallel},
        "state_dir": str(tmp / "state"),
    }
    path = tmp / "x2c.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def xnat_requests(server: Any) -> int:
    counts = server.request_counts()
    return sum(n for key, n in counts.items() if not key.split(" ", 1)[1].startswith("/x2c"))


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def baseline(settings_path: Path, parallel: int, pipeline: str, limits: bool) -> int:
    """The recipe steps called directly, ``parallel`` experiments at a time; with ``limits``,
    holding the same global concurrency slots as the flow (host, and XNAT around transfers)."""
    from contextlib import AbstractContextManager, nullcontext

    from tasks.limits import host_slot, xnat_slot
    from tasks.runtime import open_runtime
    from x2c import recipe
    from x2c.recipe import Action

    rt = open_runtime(str(settings_path))

    def slot(kind: str) -> AbstractContextManager[None]:
        if not limits:
            return nullcontext()
        if kind == "host":
            return host_slot("local", rt.host_config("local").max_in_flight)
        return xnat_slot(rt.settings.limits.xnat_transfers)

    def cycle(t: recipe.Target) -> str:
        d = recipe.decide(rt, t)
        if d.action is Action.SKIP_DONE:
            return "done"
        job = d.job_id
        selection = recipe.select(rt, t) if d.action is Action.SUBMIT else None
        with slot("host"):
            if selection is not None:
                with slot("xnat"):
                    recipe.stage(rt, t, selection)
                job = recipe.submit(rt, t, recipe.build(rt, t, selection))
            assert job is not None
            outcome = recipe.wait(rt, t, job, timeout=300)
            archive = recipe.collect(rt, t)
            with slot("xnat"):
                recipe.upload(rt, t, archive, outcome)
            recipe.clean(rt, t)
        return "done"

    targets = recipe.targets(rt, "DEMO", pipeline, "local")
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        done = list(pool.map(cycle, targets))
    assert done == ["done"] * len(targets), done
    return len(targets)


def count_runs() -> tuple[int, int]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flows = client.count_flow_runs()
        tasks = 0
        while batch := client.read_task_runs(limit=200, offset=tasks):
            tasks += len(batch)
    return flows, tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=50)
    parser.add_argument("--parallel", type=int, default=10)
    parser.add_argument("--heartbeat", action="store_true", help="keep the flow-run heartbeat")
    args = parser.parse_args()

    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_LOGGING_LEVEL,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    from tests.fixtures.xnat_server import XnatServer
    from x2c import recipe

    with tempfile.TemporaryDirectory(prefix="x2c-bench-flow-") as tmp_name:
        tmp = Path(tmp_name)
        server = XnatServer(data_dir=tmp / "devxnat", demo_data=args.experiments)
        server.start()
        os.environ["XNAT_PASS"] = server.password
        updates: dict[Any, Any] = {
            PREFECT_HOME: tmp / "prefect",
            PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp / "prefect" / "storage",
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
            PREFECT_LOGGING_LEVEL: "WARNING",
            PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS: 1.0,
        }
        if not args.heartbeat:
            updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
        try:
            settings = write_settings(tmp, server, args.parallel)
            with (
                temporary_settings(updates=updates),
                prefect_test_harness(server_startup_timeout=90),
            ):
                from flows.batch import process_experiments
                from tasks.limits import ensure_limits, wanted_limits
                from x2c.settings import load_settings

                ensure_limits(wanted_limits(load_settings(settings)))
                server.reset_counts()
                base_wall, base_cpu, n = timed(
                    lambda: baseline(settings, args.parallel, "noop-a", limits=False)
                )
                base_req = xnat_requests(server)
                recipe.close_runtimes()
                lim_wall, lim_cpu, _ = timed(
                    lambda: baseline(settings, args.parallel, "noop-c", limits=True)
                )
                recipe.close_runtimes()

                server.reset_counts()
                flow_wall, flow_cpu, results = timed(
                    lambda: process_experiments(
                        settings_path=str(settings),
                        project="DEMO",
                        pipeline="noop-b",
                        host="local",
                    )
                )
                flow_req = xnat_requests(server)
                assert len(results) == n and all(r.state == "done" for r in results)
                flow_runs, task_runs = count_runs()
                recipe.close_runtimes()
        finally:
            server.stop()

    print(
        f"{n} experiments, {args.parallel} in flight, no-op job, local host + local scheduler"
        f"{', heartbeat on' if args.heartbeat else ''}"
    )
    print(
        f"  recipe directly : {base_wall / n:6.3f} s/experiment wall, "
        f"{base_cpu / n:6.3f} s CPU, {base_req / n:5.1f} XNAT requests"
    )
    print(
        f"  + global limits : {lim_wall / n:6.3f} s/experiment wall, {lim_cpu / n:6.3f} s CPU "
        "(the recipe directly, holding the flow's concurrency slots)"
    )
    print(
        f"  Prefect flows   : {flow_wall / n:6.3f} s/experiment wall, "
        f"{flow_cpu / n:6.3f} s CPU, {flow_req / n:5.1f} XNAT requests"
    )
    print(
        f"  overhead        : {(flow_wall - base_wall) / n:+6.3f} s/experiment wall "
        f"(ratio {flow_wall / base_wall:.2f}), {(flow_cpu - base_cpu) / n:+6.3f} s CPU "
        f"(ratio {flow_cpu / base_cpu:.2f})"
    )
    print(
        f"  Prefect runs    : {(flow_runs + task_runs) / n:.1f} per experiment "
        f"({flow_runs} flow runs, {task_runs} task runs)"
    )


if __name__ == "__main__":
    main()
