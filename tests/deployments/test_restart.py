"""A Prefect server restart in the middle of ``x2c run`` (on the PostgreSQL stack) loses
nothing: the jobs already submitted keep running on the host, the run ends in one line
instead of a traceback, and the next run collects every job with no duplicate job or upload.
The truth is on the host and on XNAT, never in Prefect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.deployments.conftest import ROOT
from tests.fixtures.prefect_stack import SCRIPT, PrefectStack
from tests.fixtures.xnat_data import Requests, add_session
from tests.fixtures.xnat_server import XnatServer
from tests.flows.helpers import claims_on, hold_pipeline, poll

SESSIONS = 3


def test_a_server_restart_mid_run_loses_nothing(
    prefect_stack: PrefectStack, fresh_xnat_server: XnatServer, tmp_path: Path
) -> None:
    server = fresh_xnat_server
    project = server.new_project("RST")
    eids = [add_session(server, project, f"S{k}", f"S{k}_MR1") for k in range(SESSIONS)]
    trace, release = tmp_path / "trace", tmp_path / "release"
    pipeline = hold_pipeline(tmp_path / "hold.yaml", trace, release)
    settings = tmp_path / "x2c.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": server.url, "user": server.user},
                "hosts": {
                    "local": {
                        "workdir": str(tmp_path / "work"),
                        "scheduler": {"kind": "local", "poll_min_s": 0.5, "poll_max_s": 1.0},
                    }
                },
                "pipelines": [str(pipeline)],
                "projects": [{"project": project, "pipeline": "hold", "host": "local"}],
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    env = {**prefect_stack.env(), "XNAT_PASS": server.password, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "cli.main", "run", "--settings", str(settings), "--quick"]
    requests = Requests(server)
    requests.reset()
    run = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    try:
        poll(lambda: claims_on(tmp_path / "work") == SESSIONS, "the jobs submitted", timeout=180)
        # the server goes away while the run's passes wait for the jobs, and comes back
        pid = int((prefect_stack.state / "server.pid").read_text())
        os.killpg(pid, signal.SIGKILL)
        started = time.monotonic()
        subprocess.run(["bash", str(SCRIPT), "up"], check=True, stdout=subprocess.DEVNULL)
        print(f"\nserver back after {time.monotonic() - started:.1f} s")
        release.touch()
        _out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    # the run either rode the restart out (the client retries) or stopped in one line
    assert "Traceback" not in err, err
    if run.returncode != 0:
        assert [x for x in err.splitlines() if x.startswith("x2c: error:")], err

    again = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{SESSIONS} experiment(s): {SESSIONS} done" in again.stdout
    jobs = [d for d in (tmp_path / "work" / ".x2c-local").iterdir() if (d / "tag").is_file()]
    assert len(jobs) == SESSIONS, "no job was submitted twice"
    assert requests.uploads() == 2 * SESSIONS, requests.writes()  # archive + provenance, once
    assert len(eids) == SESSIONS
