"""A real ``prefect server start`` on a free loopback port, with its own home and SQLite file.

The autouse ``clean_environ`` fixture removes every ``PREFECT_*`` variable before each test, so
the server's settings are passed explicitly: to subprocesses through ``server.env()``, and to
in-process clients through ``server.settings()`` (``temporary_settings``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import yaml
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_HOME,
    PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    temporary_settings,
)

from tests.fixtures.xnat_server import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0


@dataclass
class PrefectServer:
    """A running ``prefect server start`` subprocess."""

    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        """The API root clients use, e.g. ``http://127.0.0.1:4321/api``."""
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def log_path(self) -> Path:
        """Where the server's output goes."""
        return self.home / "server.log"

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (``prefect deploy``, a worker) that talks to it."""
        env = dict(os.environ)
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(self.home / "storage"),
            PREFECT_SERVER_DATABASE_CONNECTION_URL=(
                f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"
            ),
            PREFECT_UI_ENABLED="false",
            PREFECT_CLI_PROMPT="false",
        )
        return env

    @contextlib.contextmanager
    def settings(self) -> Iterator[None]:
        """Point this process's Prefect client at the server for the block's duration."""
        with temporary_settings(
            updates={
                PREFECT_API_URL: self.api_url,
                PREFECT_HOME: self.home,
                PREFECT_RESULTS_LOCAL_STORAGE_PATH: self.home / "storage",
                PREFECT_SERVER_ANALYTICS_ENABLED: False,
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
            }
        ):
            yield

    def start(self) -> None:
        """Start the server and poll ``/api/health`` until it answers (or raise with its log)."""
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-ui",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.home
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited with {self.process.returncode}:\n{self.log_text()}"
                )
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):
                if requests.get(self.api_url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prefect server not healthy in {START_TIMEOUT_S}s:\n{self.log_text()}")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def log_text(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server for the tests in this directory, stopped after them."""
    server = PrefectServer(home=tmp_path_factory.mktemp("prefect-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def run(argv: list[str], server: PrefectServer, cwd: Path = ROOT) -> str:
    """Run a command against ``server``; return its output, or fail with it."""
    done = subprocess.run(
        argv, cwd=cwd, env=server.env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="session")
def deployed(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    """deployments.setup, then ``prefect deploy --all``, on the session's server; returns the
    output of the deploy."""
    tmp_path = tmp_path_factory.mktemp("deploy")
    settings = tmp_path / "x2c.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": "https://xnat.example.org", "user": "x2c"},
                "hosts": {
                    "cluster": {"ssh": "hpc", "workdir": "/scratch/x2c", "max_in_flight": 7},
                    "local": {"workdir": str(tmp_path / "work"), "max_in_flight": 2},
                },
                "projects": [{"project": "P1", "pipeline": "demo", "host": "local"}],
                "limits": {"xnat_transfers": 3},
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    run([sys.executable, "-m", "deployments.setup", "--config", str(settings)], prefect_server)
    return run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], prefect_server)
