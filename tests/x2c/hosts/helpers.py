"""Shared pieces for host and transfer tests: configs for the test cluster's sshd, a scratch
directory on it, a counting Runner wrapper, an in-memory ByteSource, and sshd restart tools."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import Cluster
from x2c.config import HostConfig
from x2c.hosts.base import Completed, Runner
from x2c.hosts.host import Host, open_host
from x2c.sources import FileRef

STATE = Path(os.environ.get("X2C_TESTCLUSTER_DIR", "/tmp/x2c-testcluster"))


def ssh_cfg(cluster: Cluster, **overrides: Any) -> HostConfig:
    """A HostConfig for the test cluster through its ssh_config alias, quick to give up."""
    fields: dict[str, Any] = {
        "name": "testcluster",
        "ssh": cluster.alias,
        "ssh_config": cluster.ssh_config,
        "known_hosts": cluster.known_hosts,
        "workdir": "/tmp",
        "connect_timeout": 10.0,
        "reconnect_attempts": 4,
        "reconnect_backoff_s": 0.1,
        "reconnect_backoff_max_s": 1.0,
    }
    fields.update(overrides)
    return HostConfig(**fields)


@pytest.fixture
def ssh_host(cluster: Cluster) -> Iterator[Host]:
    """An open SSH host on the test cluster, closed after the test."""
    with open_host(ssh_cfg(cluster)) as host:
        yield host


@pytest.fixture
def remote_tmp(cluster: Cluster) -> Iterator[str]:
    """A fresh directory path on the cluster (with a space and a quote), removed afterwards."""
    top = f"/tmp/x2c-hosts-test-{secrets.token_hex(4)}"
    yield f"{top}/it's a dir"
    command = shlex.join(["rm", "-rf", "--", top])
    subprocess.run(["ssh", "-F", str(cluster.ssh_config), cluster.alias, command], check=False)


class CountingRunner:
    """Wraps a Runner and counts its calls: a hand-written fake at the Runner seam."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        self.calls.append(list(argv))
        return self.inner.run(argv, input=input, timeout=timeout)


class MemorySource:
    """A ByteSource over in-memory files; ``on_chunk`` is called before each chunk is yielded."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.on_chunk: Callable[[FileRef, int], None] | None = None
        self.reads = 0

    def refs(self) -> list[FileRef]:
        return [
            FileRef(path=name, size=len(data), md5=hashlib.md5(data).hexdigest())
            for name, data in self.files.items()
        ]

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        self.reads += 1
        data = self.files[ref.path]
        for offset in range(0, len(data), chunk_size):
            if self.on_chunk is not None:
                self.on_chunk(ref, offset)
            yield data[offset : offset + chunk_size]


def poll(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds, checking every 20 ms; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def sshd_pids_for_client_port(server_port: int, client_port: int) -> set[int]:
    """The sshd processes serving the one connection from ``client_port`` (monitor and child)."""
    out = subprocess.run(
        [
            "ss",
            "-tnpH",
            "state",
            "established",
            f"( sport = :{server_port} and dport = :{client_port} )",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def connections_from(pid: int, server_port: int) -> int:
    """How many established TCP connections process ``pid`` has to 127.0.0.1:server_port."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( dport = :{server_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(f"pid={pid}," in line for line in out.splitlines())


def stop_listener(cluster: Cluster) -> None:
    """Stop the sshd listener (existing sessions of other users keep running)."""
    pid = int((cluster.ssh_config.parent / "sshd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    poll(lambda: not listening(cluster.port), "the sshd listener to stop")


def start_listener(cluster: Cluster) -> None:
    """Start the test cluster's sshd as scripts/testcluster.sh does, and wait until it answers."""
    if not listening(cluster.port):
        subprocess.run(
            ["/usr/sbin/sshd", "-f", str(cluster.sshd_config), "-E", str(STATE / "sshd.log")],
            check=True,
        )
    poll(lambda: listening(cluster.port), "sshd to listen again")
