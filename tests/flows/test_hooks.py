"""Hooks on Z in the reconcile flow: run through prefect-shell in ``hook-<label>`` tasks for the
experiments that ended in a pass, their output in the flow run's logs (read back through the
Prefect API), a failing hook reported beside a result it does not undo, and the XNAT password
(in the flow's own environment, as XNAT_PASS) never in a hook's environment."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flows.reconcile import reconcile
from tests.fixtures.xnat_data import add_session
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import poll, recorded_text, write_settings
from x2c import recipe
from x2c.reconcile import Row

FAILING = str(Path(__file__).resolve().parents[1] / "data" / "settings" / "failing.yaml")


@pytest.fixture
def runtimes() -> Iterator[None]:
    yield
    recipe.close_runtimes()


def test_hook_output_in_the_flow_logs_and_failures_reported(
    fresh_xnat_server: XnatServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runtimes: None
) -> None:
    server = fresh_xnat_server
    project = str(server.new_project("HOOK"))
    add_session(server, project, "H1", "H1_MR1", index=1)
    settings = write_settings(
        tmp_path / "x2c.yaml",
        server,
        tmp_path,
        projects=[(project, "demo"), (project, "failing")],
        pipelines=("demo", FAILING),
    )
    data = yaml.safe_load(settings.read_text())
    data["projects"][0]["hooks"] = {
        "on_done": [
            ["sh", "-c", 'echo "HOOK-DONE <$0> $X2C_STATE $X2C_JOB_ID"; env', "{label}"],
            ["sh", "-c", "echo about to fail; exit 7"],
        ]
    }
    data["projects"][1]["hooks"] = {
        "on_failed": [["sh", "-c", 'echo "HOOK-FAILED <$0>: $1"', "{label}", "{reason}"]]
    }
    settings.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("XNAT_PASS", server.password)

    deadline = time.monotonic() + 240
    ended: dict[str, Row] = {}
    run_ids = []
    while len(ended) < 2:
        assert time.monotonic() < deadline, ended
        state = reconcile(settings_path=str(settings), return_state=True)
        rows = state.result()
        run_ids.append(state.state_details.flow_run_id)
        ended.update({r.pipeline: r for r in rows if r.final})
        time.sleep(0.3)

    def logged() -> str | None:
        """Everything the runs recorded, once the hooks' lines arrived (logs reach the server
        asynchronously, after the run returns)."""
        text = "\n".join(recorded_text(i) for i in run_ids)
        wanted = ("HOOK-DONE", "about to fail", "HOOK-FAILED")
        return text if all(w in text for w in wanted) else None

    text = poll(logged, "the hooks' output in the flow runs' logs", timeout=60)

    done, failed = ended["demo"], ended["failing"]
    assert done.state == "done" and "hook sh exited 7" in done.reason, done
    assert failed.state == "failed" and "exited 7" not in failed.reason, failed
    assert f"HOOK-DONE <H1_MR1> done {done.job_id}" in text
    assert "about to fail" in text
    assert "HOOK-FAILED <H1_MR1>:" in text and "exit" in text
    assert server.password not in text  # the hook's `env` printed its whole environment
    assert "X2C_PROJECT=" in text and "XNAT_PASS" not in text
    assert text.count("HOOK-DONE") == 1  # once per ending, not once per pass
