"""transfers: stage / describe / HostByteSource / fetch on the local host and over the real sshd
of the test cluster, including resume, corruption, hostile names and an sshd restart."""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.cluster import Cluster
from tests.x2c.hosts.helpers import (
    CountingRunner,
    MemorySource,
    connections_from,
    poll,
    remote_tmp,
    ssh_cfg,
    sshd_pids_for_client_port,
    start_listener,
    stop_listener,
)
from x2c.errors import IntegrityError, SSHConnectError, TransferError
from x2c.hosts import Host, LocalHost, open_host
from x2c.sources import FileRef
from x2c.transfers import HostByteSource, describe, fetch, probe, safe_relpath, stage

__all__ = ["remote_tmp"]  # fixture used here

MB = 1 << 20


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.cluster)])
def target(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Host, CountingRunner, str]]:
    """(host, its counting runner, destination directory) on the local host or over SSH; only
    the SSH case needs the test cluster."""
    if request.param == "local":
        host: Host = LocalHost()
        dest = str(tmp_path / "de st 'q' $(x)" / "run")
    else:
        host = open_host(ssh_cfg(request.getfixturevalue("cluster")))
        dest = f"{request.getfixturevalue('remote_tmp')}/run"
    runner = CountingRunner(host.runner)
    host.runner = runner
    with host:
        yield host, runner, dest


def _files() -> dict[str, bytes]:
    return {
        "a.txt": b"hello\n",
        "empty": b"",
        "scans/1/DICOM/big.dcm": os.urandom(6 * MB + 123),
        "scans/2/NIFTI/t1.nii.gz": os.urandom(300_000),
    }


def _on_host(host: Host, dest: str, source: MemorySource) -> dict[str, tuple[int, str | None]]:
    refs = source.refs()
    seen = probe(host, [(None, posixpath.join(dest, r.path)) for r in refs])
    return {refs[i].path: value for i, value in seen.items()}


def _all_files(host: Host, top: str) -> list[str]:
    done = host.runner.run(["find", top, "-type", "f", "-print0"])
    assert done.returncode == 0, done.stderr
    return sorted(posixpath.relpath(p, top) for p in done.stdout.split("\0") if p)


def test_stage_copies_verifies_and_then_skips(target: tuple[Host, CountingRunner, str]) -> None:
    host, runner, dest = target
    source = MemorySource(_files())
    refs = source.refs()

    report = stage(source, refs, host, dest, max_parallel=3, chunk_size=MB)

    assert (report.copied, report.skipped) == (4, 0)
    assert report.bytes_copied == sum(r.size for r in refs)
    assert [f.path for f in report.files] == [r.path for r in refs]
    assert len(runner.calls) == 2  # one probe, one mkdir -p for every directory
    assert _on_host(host, dest, source) == {r.path: (r.size, r.md5) for r in refs}
    assert _all_files(host, dest) == sorted(r.path for r in refs)  # no .part- leftovers

    runner.calls.clear()
    source.reads = 0
    again = stage(source, refs, host, dest, max_parallel=3)
    assert (again.copied, again.skipped) == (0, 4)
    assert len(runner.calls) == 1 and source.reads == 0  # one batched check, nothing read


def test_interrupted_stage_resumes_with_verified_files_skipped(
    target: tuple[Host, CountingRunner, str],
) -> None:
    host, runner, dest = target
    files = {f"f{i}": os.urandom(200_000 + i) for i in range(6)}
    source = MemorySource(files)
    refs = source.refs()

    def fail_on_f3(ref: FileRef, offset: int) -> None:
        if ref.path == "f3" and offset > 0:
            raise ConnectionResetError("XNAT went away")

    source.on_chunk = fail_on_f3
    with pytest.raises(ConnectionResetError):
        stage(source, refs, host, dest, max_parallel=1, chunk_size=64 * 1024)
    assert _all_files(host, dest) == ["f0", "f1", "f2"]  # no partial f3 under any name

    source.on_chunk = None
    runner.calls.clear()
    report = stage(source, refs, host, dest, max_parallel=2)
    assert [f.action for f in report.files] == ["skipped"] * 3 + ["copied"] * 3
    assert len(runner.calls) == 2
    assert _on_host(host, dest, source) == {r.path: (r.size, r.md5) for r in refs}


def test_a_wrong_file_on_the_host_is_replaced(target: tuple[Host, CountingRunner, str]) -> None:
    host, _runner, dest = target
    source = MemorySource({"x.bin": b"right content", "y.bin": b"same size 13"})
    stage(source, source.refs(), host, dest, max_parallel=2)
    source.files = {"x.bin": b"new content!!", "y.bin": b"other length"}
    report = stage(source, source.refs(), host, dest, max_parallel=2)
    assert report.copied == 2
    assert _on_host(host, dest, source) == {r.path: (r.size, r.md5) for r in source.refs()}


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_corrupted_source_raises_and_leaves_no_file(
    target: tuple[Host, CountingRunner, str], damage: str
) -> None:
    host, _runner, dest = target
    good = os.urandom(3 * MB)
    source = MemorySource({"ok.txt": b"fine", "scan.dcm": good})
    refs = source.refs()
    source.files["scan.dcm"] = (
        good[:-1] + bytes([good[-1] ^ 1]) if damage == "flipped byte" else (good[: 2 * MB])
    )
    with pytest.raises(IntegrityError, match=r"scan\.dcm") as info:
        stage(source, refs, host, dest, max_parallel=1, chunk_size=MB)
    assert info.value.name == "scan.dcm"
    assert info.value.expected in (refs[1].md5, str(refs[1].size))
    assert _all_files(host, dest) == ["ok.txt"]  # neither scan.dcm nor its .part- file


HOSTILE = [
    "sp ace.txt",
    "it's.txt",
    'dq"uote.txt',
    "$(touch pwned).txt",
    "`touch pwned`.txt",
    "semi;colon|pipe&amp.txt",
    "new\nline.txt",
    "-rf",
    "..dots",
    "a/./b/c.txt",
    "ünïcødé/ø.txt",
    "q?s#h%20.txt",
]


def test_hostile_names_stay_inside_dest(target: tuple[Host, CountingRunner, str]) -> None:
    host, _runner, dest = target
    source = MemorySource({name: name.encode() for name in HOSTILE})
    report = stage(source, source.refs(), host, dest, max_parallel=4)
    assert report.copied == len(HOSTILE)
    parent = posixpath.dirname(dest)
    assert _all_files(host, parent) == sorted("run/" + safe_relpath(n) for n in HOSTILE)
    for name in HOSTILE:
        path = posixpath.join(dest, safe_relpath(name))
        assert b"".join(host.read_file(path)) == name.encode()
    assert not Path("pwned").exists() and not (Path.home() / "pwned").exists()


@pytest.mark.parametrize("bad", ["/etc/passwd", "../up", "a/../../up", "..", "a/..", "", "a\0b"])
def test_escaping_paths_are_refused_before_any_io(
    target: tuple[Host, CountingRunner, str], bad: str
) -> None:
    host, runner, dest = target
    refs = [FileRef("fine", 1, None), FileRef(bad, 1, None)]
    with pytest.raises(TransferError, match="refusing path"):
        stage(MemorySource({}), refs, host, dest, max_parallel=1)
    assert runner.calls == []


def test_many_files_with_long_names_are_checked_in_few_commands(
    target: tuple[Host, CountingRunner, str],
) -> None:
    """400 paths of ~230 bytes exceed one command line (Linux caps one argument at 128 KiB);
    the check is split into a few commands and every file is still found."""
    host, runner, dest = target
    source = MemorySource({f"d{i % 4}/{i:04d}-{'x' * 200}": b"%d" % i for i in range(400)})
    refs = source.refs()
    assert stage(source, refs, host, dest, max_parallel=8).copied == 400
    runner.calls.clear()
    report = stage(source, refs, host, dest, max_parallel=8)
    assert report.skipped == 400
    assert 2 <= len(runner.calls) <= 5


def test_two_names_for_one_path_are_refused(target: tuple[Host, CountingRunner, str]) -> None:
    host, runner, dest = target
    refs = [FileRef("a/b", 1, None), FileRef("a/./b", 1, None)]
    with pytest.raises(TransferError, match="same path"):
        stage(MemorySource({}), refs, host, dest, max_parallel=1)
    assert runner.calls == []


def test_staging_dir_goes_through_this_machine(
    target: tuple[Host, CountingRunner, str], tmp_path: Path
) -> None:
    host, _runner, dest = target
    source = MemorySource(_files())
    refs = source.refs()
    staging = tmp_path / "stag ing"
    report = stage(source, refs, host, dest, max_parallel=2, staging_dir=staging)
    assert report.copied == 4
    for ref in refs:
        assert hashlib.md5((staging / ref.path).read_bytes()).hexdigest() == ref.md5
    assert _on_host(host, dest, source) == {r.path: (r.size, r.md5) for r in refs}
    # the staged copies are reused: a second stage to a new place does not read the source
    source.reads = 0
    stage(source, refs, host, dest + "2", max_parallel=2, staging_dir=staging)
    assert source.reads == 0
    assert _on_host(host, dest + "2", source) == {r.path: (r.size, r.md5) for r in refs}


def test_describe_host_byte_source_and_fetch(
    target: tuple[Host, CountingRunner, str], tmp_path: Path
) -> None:
    host, runner, dest = target
    data = os.urandom(5 * MB + 7)
    source = MemorySource({"out/hippo results.zip": data})
    stage(source, source.refs(), host, dest, max_parallel=1)
    path = posixpath.join(dest, "out/hippo results.zip")

    runner.calls.clear()
    ref = describe(host, path)
    assert ref == FileRef("hippo results.zip", len(data), hashlib.md5(data).hexdigest())
    assert len(runner.calls) == 1
    assert describe(host, path, root=dest).path == "out/hippo results.zip"

    chunks = list(HostByteSource(host, posixpath.dirname(path)).iter_bytes(ref, MB))
    assert b"".join(chunks) == data and max(len(c) for c in chunks) <= MB

    local = tmp_path / "fe tched 'q'" / "r.zip"
    outcome = fetch(host, path, local)
    assert outcome.action == "copied" and outcome.bytes == len(data)
    assert local.read_bytes() == data
    assert sorted(p.name for p in local.parent.iterdir()) == ["r.zip"]

    with pytest.raises(TransferError, match="not a readable file"):
        describe(host, path + ".missing")


# -- sshd restarted in the middle of a transfer -------------------------------------------------


class _RestartOnFailedAttempt(logging.Handler):
    """Starts sshd again as soon as x2c logs a failed (re)connect attempt."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__(logging.WARNING)
        self.cluster = cluster
        self.fired = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "attempt" in record.getMessage() and "failed" in record.getMessage():
            self.fired += 1
            start_listener(self.cluster)


@pytest.fixture
def restart_handler(cluster: Cluster) -> Iterator[_RestartOnFailedAttempt]:
    """Installs the handler; whatever happens, sshd listens again when the test ends."""
    handler = _RestartOnFailedAttempt(cluster)
    logger = logging.getLogger("x2c.hosts.ssh")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        start_listener(cluster)


@pytest.mark.cluster
def test_transfer_survives_an_sshd_restart(
    cluster: Cluster, remote_tmp: str, restart_handler: _RestartOnFailedAttempt
) -> None:
    """Kill the listener and this connection's sshd processes mid-file (only ours: other
    engineers share the sshd); x2c reconnects with backoff, restarts the file and verifies it."""
    source = MemorySource({"big.bin": os.urandom(12 * MB), "small.bin": os.urandom(100_000)})
    refs = source.refs()
    killed = threading.Event()
    with open_host(ssh_cfg(cluster, reconnect_backoff_s=0.2)) as host:

        def kill_mid_file(ref: FileRef, offset: int) -> None:
            if ref.path != "big.bin" or offset < 4 * MB or killed.is_set():
                return
            killed.set()
            client = host.fs.client
            client_port = client.get_extra_info("sockname")[1]
            pids = sshd_pids_for_client_port(cluster.port, client_port)
            assert pids, "found no sshd process for this connection"
            stop_listener(cluster)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            poll(client.is_closed, "the client to see its connection drop")

        source.on_chunk = kill_mid_file
        report = stage(source, refs, host, remote_tmp, max_parallel=2, chunk_size=MB)

        assert killed.is_set() and restart_handler.fired >= 1  # a reconnect attempt was refused
        assert report.copied == 2
        big = next(f for f in report.files if f.path == "big.bin")
        assert big.attempts == 2
        assert host.generation == 1
        assert _on_host(host, remote_tmp, source) == {r.path: (r.size, r.md5) for r in refs}
        assert _all_files(host, remote_tmp) == ["big.bin", "small.bin"]  # part file removed
        assert connections_from(os.getpid(), cluster.port) == 1


@pytest.mark.cluster
def test_a_host_that_stays_down_fails_once_without_a_login_storm(
    cluster: Cluster, tmp_path: Path, remote_tmp: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection drops mid-file and the host cannot be reached again (its ssh_config now
    points at a closed port): stage fails after one capped round of attempts, and later calls
    fail at once instead of logging in again."""
    config = tmp_path / "ssh_config"
    config.write_text(cluster.ssh_config.read_text())
    source = MemorySource({"big.bin": os.urandom(4 * MB)})
    caplog.set_level(logging.WARNING, logger="x2c.hosts.ssh")
    with open_host(ssh_cfg(cluster, ssh_config=config, reconnect_attempts=2)) as host:

        def drop_connection(ref: FileRef, offset: int) -> None:
            if offset == MB:
                config.write_text(config.read_text().replace(f"Port {cluster.port}", "Port 1"))
                client = host.fs.client
                port = client.get_extra_info("sockname")[1]
                for pid in sshd_pids_for_client_port(cluster.port, port):
                    os.kill(pid, signal.SIGKILL)
                poll(client.is_closed, "the client to see its connection drop")

        source.on_chunk = drop_connection
        with pytest.raises(SSHConnectError, match="after 2 attempts"):
            stage(source, source.refs(), host, remote_tmp, max_parallel=1, chunk_size=MB)
        logins = [r for r in caplog.records if r.name == "x2c.hosts.ssh" and "attempt" in r.msg]
        assert len(logins) == 2
        assert "could not connect to testcluster (x2c-test)" in logins[0].getMessage()
        with pytest.raises(SSHConnectError, match="after 2 attempts"):
            host.runner.run(["true"])
        assert (
            len([r for r in caplog.records if r.name == "x2c.hosts.ssh" and "attempt" in r.msg])
            == 2
        )


@pytest.mark.cluster
def test_fetch_survives_a_dropped_connection(
    cluster: Cluster, remote_tmp: str, tmp_path: Path
) -> None:
    """The connection is killed after the first chunk of a fetch (Y -> Z): fetch reconnects,
    reads the file again from the start and verifies it against the md5 computed on Y."""
    data = os.urandom(6 * MB)
    with open_host(ssh_cfg(cluster)) as host:
        stage(
            MemorySource({"result.zip": data}),
            MemorySource({"result.zip": data}).refs(),
            host,
            remote_tmp,
            max_parallel=1,
        )
        read_file = host.read_file
        killed = threading.Event()

        def read_then_drop(path: str, chunk_size: int = MB) -> Iterator[bytes]:
            for index, chunk in enumerate(read_file(path, chunk_size)):
                if index == 1 and not killed.is_set():
                    killed.set()
                    client = host.fs.client
                    port = client.get_extra_info("sockname")[1]
                    for pid in sshd_pids_for_client_port(cluster.port, port):
                        os.kill(pid, signal.SIGKILL)
                    poll(client.is_closed, "the client to see its connection drop")
                yield chunk

        host.read_file = read_then_drop  # type: ignore[method-assign]
        outcome = fetch(host, f"{remote_tmp}/result.zip", tmp_path / "result.zip", chunk_size=MB)
    assert killed.is_set() and outcome.attempts == 2
    assert (tmp_path / "result.zip").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.zip"]
