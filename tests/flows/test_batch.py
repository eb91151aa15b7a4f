"""The fan-out: five experiments, one with no matching input and one whose job fails, under a
per-host in-flight limit of 2 that is MEASURED (from the jobs' own start/end stamps and from the
slots each experiment held), with a sixth experiment run at the same time by ANOTHER flow run
drawing on the same limit; then a second batch over the whole project that does nothing but
check."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect import flow

from flows.batch import process_experiments, result_of, run_experiment
from flows.experiment import process_experiment
from tasks.report import DONE, FAILED, SKIPPED, ExperimentResult
from tests.fixtures.xnat_data import add_session, xnat_config
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import artifacts_by_key, max_overlap, poll, write_settings
from x2c import recipe
from x2c.recipe import Target
from x2c.xnat import connect, resource_status

# The job stamps its start and end into a trace file shared by all jobs, holds on for 3 s (longer
# than a slot grant can take on SQLite, ~2 s) so that jobs overlap when the limit lets them, fails
# with exit 3 for subjects named FAIL*,
# and otherwise runs the demo computation.
_SCRIPT = (
    'trace="$2"; echo "start $(date +%s.%N) $1" >> "$trace"; '
    'trap \'echo "end $(date +%s.%N) $1" >> "$trace"\' EXIT; sleep 3; '
    'case "$1" in FAIL*) echo "failing on purpose for $1" >&2; exit 3;; esac; '
    'python3 -m x2c.demo_pipeline "$3" "$4" "--label=$1"'
)


@flow(name="test-experiment-node")
def node_of(settings_path: str, t: Target) -> tuple[bool, ExperimentResult]:
    """Run one batch node (the experiment task) and report its own final state and result."""
    state = run_experiment(settings_path, t, return_state=True)
    return state.is_failed(), result_of(state, t)


def traced_pipeline(path: Path, trace: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "name": "traced",
                "version": "1",
                "inputs": {"scan_types": ["T1*"], "resource": "NIFTI", "pick": "first"},
                "input_match": "*.nii*",
                "image": "none",
                "runtime": "none",
                "command": [
                    "sh",
                    "-c",
                    _SCRIPT,
                    "traced",
                    "{subject}",
                    str(trace),
                    "{input}",
                    "{outputs}",
                ],
                "walltime": "00:05:00",
                "outputs": ["mask.nii.gz", "stats.json"],
                "archive": "TRACED",
                "resource": "TRACED",
            }
        )
    )
    return path


def job_windows(trace: Path) -> list[tuple[float, float]]:
    starts: dict[str, float] = {}
    windows = []
    for line in trace.read_text().splitlines():
        kind, stamp, subject = line.split(" ", 2)
        if kind == "start":
            starts[subject] = float(stamp)
        else:
            windows.append((starts.pop(subject), float(stamp)))
    assert not starts, f"jobs without an end: {starts}"
    return windows


@pytest.fixture
def runtimes() -> Iterator[None]:
    yield
    recipe.close_runtimes()


def test_five_experiments_under_an_in_flight_limit_of_two(
    xnat_server: XnatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtimes: None
) -> None:
    project = xnat_server.new_project("FAN")
    ok = [add_session(xnat_server, project, f"S{k}", f"S{k}_MR1", index=k) for k in (1, 2, 3)]
    no_input = add_session(xnat_server, project, "S4", "S4_MR1", scan_type="DWI")
    failing = add_session(xnat_server, project, "FAIL5", "FAIL5_MR1", index=5)
    trace = tmp_path / "trace.txt"
    pipe = traced_pipeline(tmp_path / "traced.yaml", trace)
    # The local scheduler would run 5 jobs at once: only the Prefect limit (2) holds them back.
    settings = write_settings(
        tmp_path / "x2c.yaml",
        xnat_server,
        tmp_path,
        pipelines=[str(pipe)],
        max_in_flight=2,
        max_local_jobs=5,
    )
    monkeypatch.setenv("XNAT_PASS", xnat_server.password)

    # Another flow run on the same host at the same time (as the watcher would start one): the
    # limit is the server's, so it counts against the same two slots.
    other = add_session(xnat_server, project, "S6", "S6_MR1", index=6)
    beside: dict[str, ExperimentResult] = {}

    def other_run() -> None:
        beside["result"] = process_experiment(  # type: ignore[assignment]
            settings_path=str(settings),
            project=project,
            experiment=other,
            pipeline="traced",
            host="local",
        )

    thread = threading.Thread(target=other_run)
    thread.start()
    state = process_experiments(
        settings_path=str(settings),
        project=project,
        pipeline="traced",
        host="local",
        experiments=[*ok, no_input, failing],
        return_state=True,
    )
    thread.join(timeout=300)
    assert beside["result"].state == DONE
    assert state.is_failed(), "one experiment failed, so the batch did"
    assert "1 of 5 experiment(s) failed: " in str(state.message)
    assert "FAIL5_MR1" in str(state.message)
    results: list[ExperimentResult] = state.result(raise_on_failure=False)
    by_id = {r.experiment: r for r in results}
    assert [by_id[e].state for e in ok] == [DONE, DONE, DONE]
    assert by_id[no_input].state == SKIPPED
    assert by_id[no_input].reason.startswith("skipped: ")
    assert by_id[failing].state == FAILED and by_id[failing].job_id
    assert "exit 3" in by_id[failing].reason
    assert "failing on purpose for FAIL5" in by_id[failing].log_tail

    # the limit, measured: jobs that ran at once, and experiments holding a slot at once
    jobs = job_windows(trace)
    assert len(jobs) == 5
    assert max_overlap(jobs) <= 2, jobs
    held = [r.in_flight for r in [*results, beside["result"]] if r.in_flight is not None]
    assert len(held) == 5  # the one with nothing to process never took a slot
    assert max_overlap(held) == 2, held  # never above the limit, and the limit was used
    print(f"\nmax in flight: {max_overlap(held)} (limit 2), max jobs at once: {max_overlap(jobs)}")

    with connect(xnat_config(xnat_server)) as session:
        for eid in ok:
            status = resource_status(session, eid, "TRACED", "1")
            assert status.done, status.reason
            assert status.provenance is not None

    run_id = state.state_details.flow_run_id
    assert run_id is not None
    key = f"x2c-batch-{project.lower()}-traced"
    arts = poll(
        lambda: (a := artifacts_by_key(run_id)) and f"{key}-summary" in a and a, "artifacts"
    )
    rows = json.loads(arts[key].data)
    assert sorted(row["state"] for row in rows) == ["done", "done", "done", "failed", "skipped"]
    summary = arts[f"{key}-summary"].data
    assert "## Failed" in summary and "FAIL5_MR1" in summary
    assert "failing on purpose for FAIL5" in summary
    assert "progress" in arts and arts["progress"].data == 100.0

    # The second batch: checks only. No job, no upload; the failure is reported again.
    xnat_server.reset_counts()
    again = process_experiments(
        settings_path=str(settings),
        project=project,
        pipeline="traced",
        host="local",
        return_state=True,
    )
    assert again.is_failed()
    second = {r.experiment: r for r in again.result(raise_on_failure=False)}
    assert set(second) == {*ok, no_input, failing, other}
    assert {second[e].action for e in ok} == {"skip_done"}
    assert second[failing].state == FAILED and second[no_input].state == SKIPPED
    assert second[failing].action == "report_failed"

    # the batch's graph shows the failure: the experiment-<label> task itself ends Failed (read
    # from its own final state; the server records task runs asynchronously) and still carries
    # the experiment's result for the summary
    t = Target(
        project=project,
        experiment=failing,
        label="FAIL5_MR1",
        subject="FAIL5",
        pipeline="traced",
        host="local",
    )
    failed, carried = node_of(str(settings), t)
    assert failed, "the experiment task of a failed experiment ends Failed"
    assert carried.reason == second[failing].reason
    assert len(trace.read_text().splitlines()) == 10, "no job was submitted again"
    counts = xnat_server.request_counts()
    total = sum(n for k, n in counts.items() if not k.split(" ", 1)[1].startswith("/x2c"))
    # listing 1; per experiment a resource status (2); the failed and the empty one also
    # look at their inputs (2 each)
    assert total <= 1 + 6 * 2 + 2 * 2, counts
    print(f"second batch: {total} XNAT requests for 6 experiments")
