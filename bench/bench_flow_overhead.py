"""Per-experiment orchestration cost of the Prefect passes against the same passes called directly.

    python bench/bench_flow_overhead.py [--experiments 100 1000] [--parallel 8]

For each N: starts a real ``x2c devxnat`` with N demo sessions and processes every session twice
on the local host with the local scheduler and a no-op job (it writes one small file), with
every session in flight at once (``max_in_flight`` = N: the work per experiment is the same in
both, only the orchestration differs), in the same run:

1. baseline: :func:`x2c.reconcile.run_pass` called directly, pass after pass until every
   experiment is done (pipeline ``noop-a``);
2. Prefect: the ``x2c-reconcile`` flow, pass after pass until done (pipeline ``noop-b``, same
   job, its own result resource, so both do the full work).

The Prefect API is the server named by ``PREFECT_API_URL`` when it is set (for example the
PostgreSQL stack of ``scripts/prefect-stack.sh``), else a temporary test harness on SQLite.
Prints per experiment: wall seconds of each and the overhead (ratio against the baseline), this
process's CPU seconds, Prefect API requests (HTTP calls of the client, counted at its
transport) and runs (flow + task runs), XNAT requests, and experiments failed or left behind
by a Prefect API error; then the N=max overhead against the N=min one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def write_settings(tmp: Path, server: Any, n: int, parallel: int) -> Path:
    pipelines = []
    for name in ("noop-a", "noop-b"):
        path = tmp / f"{name}.yaml"
        label = name.upper().replace("-", "_")
        path.write_text(yaml.safe_dump({"name": name, **NOOP, "archive": label, "resource": label}))
        pipelines.append(str(path))
    settings = {
        "xnat": {"url": server.url, "user": server.user},
        "hosts": {
            "local": {
                "workdir": str(tmp / "work"),
                "scheduler": {"kind": "local", "max_local_jobs": n},
                "max_in_flight": n,
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


def machine_cpu() -> float:
    """CPU seconds every process on this machine has used (user + nice + system), from
    /proc/stat: with the Prefect server on this machine, its work shows here, not in ours."""
    with open("/proc/stat") as f:
        user, nice, system = f.readline().split()[1:4]
    return (int(user) + int(nice) + int(system)) / os.sysconf("SC_CLK_TCK")


def timed(fn: Callable[[], Any]) -> tuple[float, float, float, Any]:
    """(wall, this process's CPU, the machine's CPU, fn's result)."""
    wall, cpu, machine = time.perf_counter(), time.process_time(), machine_cpu()
    out = fn()
    return (
        time.perf_counter() - wall,
        time.process_time() - cpu,
        machine_cpu() - machine,
        out,
    )


def until_done(one: Callable[[], list[Any]], n: int) -> tuple[int, list[Any]]:
    """Passes until all ``n`` experiments are final; (passes, rows of the last)."""
    passes = 0
    while True:
        rows = one()
        passes += 1
        if len(rows) == n and all(r.final for r in rows):
            return passes, rows
        if passes > 200:
            raise RuntimeError(f"not done after 200 passes: {rows[:3]}")
        time.sleep(0.2)


@contextmanager
def counting_prefect_requests() -> Iterator[list[int]]:
    """Count the Prefect client's HTTP requests (sync and async transports)."""
    import httpx

    count = [0]
    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send

    def send(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        if "/api/" in str(request.url):
            count[0] += 1
        return sync_send(self, request, **kw)

    async def asend(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        if "/api/" in str(request.url):
            count[0] += 1
        return await async_send(self, request, **kw)

    httpx.Client.send = send  # type: ignore[method-assign]
    httpx.AsyncClient.send = asend  # type: ignore[method-assign]
    try:
        yield count
    finally:
        httpx.Client.send = sync_send  # type: ignore[method-assign]
        httpx.AsyncClient.send = async_send  # type: ignore[method-assign]


def count_runs(since: Any) -> tuple[int, int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterStartTime,
        TaskRunFilter,
        TaskRunFilterStartTime,
    )

    with get_client(sync_client=True) as client:
        flows = client.count_flow_runs(
            flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since))
        )
        tasks, offset = 0, 0
        while batch := client.read_task_runs(
            task_run_filter=TaskRunFilter(start_time=TaskRunFilterStartTime(after_=since)),
            limit=200,
            offset=offset,
        ):
            tasks += len(batch)
            offset += len(batch)
    return flows, tasks


def measure(n: int, parallel: int) -> dict[str, float]:
    from datetime import UTC, datetime

    from flows.reconcile import reconcile
    from tasks.runtime import open_runtime
    from tests.fixtures.xnat_server import XnatServer
    from x2c import recipe
    from x2c import reconcile as passes

    with tempfile.TemporaryDirectory(prefix="x2c-bench-flow-") as tmp_name:
        tmp = Path(tmp_name)
        server = XnatServer(data_dir=tmp / "devxnat", demo_data=n)
        server.start()
        os.environ["XNAT_PASS"] = server.password
        try:
            settings = write_settings(tmp, server, n, parallel)
            rt = open_runtime(str(settings))
            scope_a = [passes.ScopeEntry("DEMO", "noop-a", "local")]
            server.reset_counts()
            base_wall, base_cpu, base_machine, (base_passes, rows) = timed(
                lambda: until_done(lambda: passes.run_pass(rt, scope_a, workers=parallel), n)
            )
            assert all(r.state == "done" for r in rows), rows[:3]
            base_req = xnat_requests(server)
            recipe.close_runtimes()

            def one() -> list[Any]:
                state = reconcile(
                    settings_path=str(settings),
                    project="DEMO",
                    pipeline="noop-b",
                    host="local",
                    return_state=True,
                )
                data = state.result(raise_on_failure=False)
                if not isinstance(data, list):
                    raise RuntimeError(f"a pass failed: {data!r}")
                return data

            server.reset_counts()
            since = datetime.now(UTC)
            with counting_prefect_requests() as api:
                flow_wall, flow_cpu, flow_machine, (flow_passes, rows) = timed(
                    lambda: until_done(one, n)
                )
            flow_req = xnat_requests(server)
            lost = sum("lost track" in r.reason for r in rows)
            failed = sum(r.state != "done" for r in rows)
            flow_runs, task_runs = count_runs(since)
            recipe.close_runtimes()
        finally:
            server.stop()
    return {
        "n": n,
        "base_wall": base_wall,
        "base_cpu": base_cpu,
        "base_machine": base_machine,
        "base_passes": base_passes,
        "base_req": base_req,
        "flow_wall": flow_wall,
        "flow_cpu": flow_cpu,
        "flow_machine": flow_machine,
        "flow_passes": flow_passes,
        "flow_req": flow_req,
        "api": api[0],
        "runs": flow_runs + task_runs,
        "flow_runs": flow_runs,
        "task_runs": task_runs,
        "failed": failed,
        "lost": lost,
    }


def report(m: dict[str, float]) -> None:
    n = m["n"]
    print(f"N = {n:.0f} experiments, all in flight at once, no-op job, local scheduler")
    print(
        f"  passes directly : {m['base_wall'] / n:6.3f} s/experiment wall, "
        f"{m['base_cpu'] / n:6.3f} s CPU, {m['base_req'] / n:4.1f} XNAT requests, "
        f"{m['base_passes']:.0f} passes"
    )
    print(
        f"  Prefect passes  : {m['flow_wall'] / n:6.3f} s/experiment wall, "
        f"{m['flow_cpu'] / n:6.3f} s CPU, {m['flow_req'] / n:4.1f} XNAT requests, "
        f"{m['flow_passes']:.0f} passes"
    )
    print(
        f"  overhead        : {(m['flow_wall'] - m['base_wall']) / n * 1000:+7.1f} ms/experiment "
        f"wall (ratio {m['flow_wall'] / m['base_wall']:.2f}), "
        f"{(m['flow_cpu'] - m['base_cpu']) / n * 1000:+7.1f} ms CPU "
        f"(ratio {m['flow_cpu'] / m['base_cpu']:.2f})"
    )
    cores = os.cpu_count() or 1
    print(
        f"  machine CPU     : {m['base_machine'] / n * 1000:7.1f} ms/experiment directly, "
        f"{m['flow_machine'] / n * 1000:7.1f} ms with Prefect (all processes: the Prefect "
        f"server too when it runs here; {cores} cores, busy "
        f"{m['base_machine'] / m['base_wall'] / cores:.0%} / "
        f"{m['flow_machine'] / m['flow_wall'] / cores:.0%})"
    )
    print(
        f"  Prefect         : {m['api'] / n:.1f} API requests and {m['runs'] / n:.2f} runs per "
        f"experiment ({m['flow_runs']:.0f} flow runs, {m['task_runs']:.0f} task runs); "
        f"{m['failed']:.0f} experiments not done, {m['lost']:.0f} left by a Prefect API error"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()

    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_LOGGING_LEVEL,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    home = Path(tempfile.mkdtemp(prefix="x2c-bench-prefect-"))
    updates: dict[Any, Any] = {
        PREFECT_HOME: home,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH: home / "storage",
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        PREFECT_LOGGING_LEVEL: "WARNING",
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
    }
    api = os.environ.get("PREFECT_API_URL")
    with temporary_settings(updates=updates):
        if api:
            print(f"Prefect API: {api} (PREFECT_API_URL)")
            results = [measure(n, args.parallel) for n in args.experiments]
        else:
            print("Prefect API: a temporary test harness on SQLite")
            with prefect_test_harness(server_startup_timeout=120):
                print(f"  ({PREFECT_API_URL.value()})")
                results = [measure(n, args.parallel) for n in args.experiments]
    for m in results:
        report(m)
    if len(results) > 1:
        lo, hi = results[0], results[-1]
        per = [(m["flow_wall"] - m["base_wall"]) / m["n"] for m in (lo, hi)]
        ratio = per[1] / per[0] if per[0] > 0 else float("nan")
        print(
            f"overhead per experiment at N={hi['n']:.0f} against N={lo['n']:.0f}: "
            f"{per[1] * 1000:.1f} ms vs {per[0] * 1000:.1f} ms (ratio {ratio:.2f})"
        )


if __name__ == "__main__":
    main()
