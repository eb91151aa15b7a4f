"""Test data and settings for the flow tests: sessions in a project of their own on devxnat,
a settings FILE (flows take its path), and readers for what Prefect recorded."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from tests.fixtures.xnat_server import XnatServer

VENV_BIN = str(Path(sys.executable).parent)
T = TypeVar("T")


def write_settings(
    path: Path,
    server: XnatServer,
    work: Path,
    *,
    projects: Sequence[tuple[str, str]] = (),
    pipelines: Sequence[str] = ("demo",),
    max_in_flight: int = 2,
    max_local_jobs: int = 5,
    host: str = "local",
    **host_fields: Any,
) -> Path:
    """A settings file: the local host with the local scheduler, the demo pipeline run bare by
    this venv's python, ``projects`` as (project, pipeline) on host ``local``. The password is
    NOT in it: the flow gets it from XNAT_PASS (set by the test)."""
    settings = {
        "xnat": {"url": server.url, "user": server.user, "timeout": 20, "retries": 2},
        "hosts": {
            host: {
                "workdir": str(work / "work"),
                "scheduler": {
                    "kind": "local",
                    "max_local_jobs": max_local_jobs,
                    "poll_min_s": 0.2,
                    "poll_max_s": 0.5,
                    "exit_marker_grace_s": 3.0,
                },
                "container_runtime": "none",
                "path_prepend": [VENV_BIN],
                "max_in_flight": max_in_flight,
                **host_fields,
            }
        },
        "pipelines": list(pipelines),
        "projects": [{"project": p, "pipeline": pl, "host": host} for p, pl in projects],
        "limits": {"xnat_transfers": 2},
        "state_dir": str(work / "state"),
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def poll(check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Call ``check`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def recorded_text(flow_run_id: UUID) -> str:
    """Everything Prefect keeps about a flow run and its child runs that a user can see:
    parameters, log messages, artifacts (their data and descriptions), state messages."""
    parts: list[str] = []
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(flow_run_id)]
        runs += client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        for run in runs:
            parts.append(repr(run.parameters))
            parts.append(run.name)
            parts.append(str(run.state.message if run.state else ""))
            for log in client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            ):
                parts.append(log.message)
            for art in client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            ):
                parts.append(repr(art.data))
                parts.append(str(art.description))
    return "\n".join(parts)


def artifacts_by_key(flow_run_id: UUID) -> dict[str, Any]:
    """The artifacts of one flow run, keyed by their key (unkeyed ones under their type)."""
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key or str(a.type): a for a in arts}


def max_overlap(windows: Sequence[tuple[float, float]]) -> int:
    """The most windows open at one instant (an end at t comes before a start at t)."""
    events = sorted([(a, 1) for a, _ in windows] + [(b, -1) for _, b in windows])
    best = now = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


# The job stamps its start and end into a trace file shared by all jobs, waits until the test
# creates the release file (so that jobs are provably still running while passes come and go),
# fails with exit 3 for subjects named FAIL*, and otherwise writes its one output.
_HOLD = (
    'trace="$2"; release="$3"; echo "start $(date +%s.%N) $1" >> "$trace"; '
    'trap \'echo "end $(date +%s.%N) $1" >> "$trace"\' EXIT; '
    'while [ ! -e "$release" ]; do sleep 0.1; done; '
    'case "$1" in FAIL*) echo "failing on purpose for $1" >&2; exit 3;; esac; '
    'echo "$1" > "$4/out.txt"'
)


def pipeline_file(
    path: Path, name: str, command: list[str], outputs: list[str], walltime: str = "00:10:00"
) -> Path:
    """A pipeline ``name`` run bare (no image) on the first T1 NIfTI, 64 MB, its archive and
    result resource named ``NAME``."""
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "version": "1",
                "inputs": {"scan_types": ["T1*"], "resource": "NIFTI", "pick": "first"},
                "input_match": "*.nii*",
                "image": "none",
                "runtime": "none",
                "command": command,
                "walltime": walltime,
                "mem_mb": 64,
                "outputs": outputs,
                "archive": name.upper(),
                "resource": name.upper(),
            }
        )
    )
    return path


def hold_pipeline(path: Path, trace: Path, release: Path) -> Path:
    """A pipeline ``hold`` whose jobs run until ``release`` exists (see ``_HOLD``)."""
    command = ["sh", "-c", _HOLD, "hold", "{subject}", str(trace), str(release), "{outputs}"]
    return pipeline_file(path, "hold", command, ["out.txt"])


def hold_settings(
    tmp_path: Path, server: XnatServer, project: str, *, max_in_flight: int, max_local_jobs: int
) -> tuple[Path, Path, Path]:
    """Settings of ``project`` on pipeline ``hold`` on the local host (``write_settings``);
    returns (settings, the jobs' trace, the file that releases them)."""
    trace, release = tmp_path / "trace", tmp_path / "release"
    pipeline = hold_pipeline(tmp_path / "hold.yaml", trace, release)
    settings = write_settings(
        tmp_path / "x2c.yaml",
        server,
        tmp_path,
        projects=[(project, "hold")],
        pipelines=[str(pipeline)],
        max_in_flight=max_in_flight,
        max_local_jobs=max_local_jobs,
    )
    return settings, trace, release


def job_windows(trace: Path) -> list[tuple[float, float]]:
    """(start, end) of every job that wrote ``trace`` and ended."""
    starts: dict[str, float] = {}
    windows = []
    for line in trace.read_text().splitlines():
        kind, stamp, who = line.split(" ", 2)
        if kind == "start":
            starts[who] = float(stamp)
        elif who in starts:
            windows.append((starts.pop(who), float(stamp)))
    return windows


def claims_on(workdir: Path) -> int:
    """Experiments holding an in-flight place under ``workdir`` (their ``inflight`` files)."""
    return len(list(workdir.glob("*/*/inflight")))


def pass_state(settings: Path, **params: Any) -> Any:
    """Run one ``reconcile`` pass in this process; its final state (asserted Completed)."""
    from flows.reconcile import reconcile

    state = reconcile(settings_path=str(settings), return_state=True, **params)
    assert state.is_completed(), state
    return state


def one_pass(settings: Path, **params: Any) -> list[Any]:
    """Run one pass; one row per experiment of its scope."""
    rows = pass_state(settings, **params).result()
    assert isinstance(rows, list)
    return rows


def passes_until_final(settings: Path, timeout: float = 300.0, **params: Any) -> list[Any]:
    """Passes until every experiment is done, skipped or failed (polling, with a deadline);
    each experiment's row from the pass that ended it."""
    deadline = time.monotonic() + timeout
    ended: dict[str, Any] = {}
    while True:
        rows = one_pass(settings, **params)
        for r in rows:
            if r.final:
                ended.setdefault(r.experiment, r)
        if all(r.final for r in rows):
            return [ended[r.experiment] for r in rows]
        assert time.monotonic() < deadline, [(r.label, r.state, r.reason) for r in rows]
        time.sleep(0.3)
