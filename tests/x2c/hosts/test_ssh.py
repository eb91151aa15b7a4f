"""SSHHost against the test cluster's real sshd: resolution through ssh_config, host-key and
login refusals, argv quoting, one connection per host, and the complete error mapping."""

from __future__ import annotations

import errno
import inspect
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from tests.fixtures.cluster import Cluster
from tests.x2c.hosts.helpers import (
    connections_from,
    poll,
    remote_tmp,
    ssh_cfg,
    ssh_host,
    sshd_pids_for_client_port,
)
from x2c.errors import (
    ConfigError,
    HostKeyError,
    RemoteCommandError,
    RemoteError,
    SSHAuthError,
    SSHConnectError,
    TransferError,
)
from x2c.hosts import Host, open_host
from x2c.hosts.ssh import translate_ssh_error

__all__ = ["remote_tmp", "ssh_host"]  # fixtures used here

pytestmark = pytest.mark.cluster

HOSTILE_ARGS = [
    "plain",
    "two words",
    "it's",
    'say "hi"',
    "$(touch /tmp/x2c-pwned)",
    "`touch /tmp/x2c-pwned`",
    "a;b|c&d>e<f",
    "new\nline",
    "tab\there",
    "*?[glob]",
    "~root",
    "-n",
    "",
    "back\\slash",
    "ünïcødé",
]


def test_connects_through_the_ssh_config_alias(ssh_host: Host) -> None:
    done = ssh_host.runner.run(["sh", "-c", 'echo "$USER:$SSH_CONNECTION"'])
    assert done.returncode == 0
    user, conn = done.stdout.strip().split(":")
    assert user == "root"  # User from ssh_config
    assert conn.split()[2:] == ["127.0.0.1", "2222"]  # HostName and Port from ssh_config


def test_defaults_are_the_users_ssh_config_and_known_hosts(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    config = cluster.ssh_config.read_text()
    assert "UserKnownHostsFile" in config
    # without UserKnownHostsFile in ~/.ssh/config: ~/.ssh/known_hosts
    (home / ".ssh" / "config").write_text(
        "".join(line for line in config.splitlines(True) if "UserKnownHostsFile" not in line)
    )
    (home / ".ssh" / "known_hosts").write_text(cluster.known_hosts.read_text())
    monkeypatch.setenv("HOME", str(home))
    cfg = ssh_cfg(cluster, ssh_config=None, known_hosts=None)
    with open_host(cfg) as host:
        assert host.runner.run(["true"]).returncode == 0
    (home / ".ssh" / "known_hosts").write_text("")
    with pytest.raises(HostKeyError, match=str(home / ".ssh" / "known_hosts")):
        open_host(cfg)
    # with it: that file (the cluster's), and the empty ~/.ssh/known_hosts does not matter
    (home / ".ssh" / "config").write_text(config)
    with open_host(cfg) as host:
        assert host.runner.run(["true"]).returncode == 0


@pytest.mark.parametrize("arg", HOSTILE_ARGS)
def test_hostile_argv_comes_back_byte_identical(ssh_host: Host, arg: str) -> None:
    done = ssh_host.runner.run(["printf", "%s", arg])
    assert (done.returncode, done.stdout, done.stderr) == (0, arg, "")
    assert not Path("/tmp/x2c-pwned").exists()


def test_runner_refuses_a_shell_string(ssh_host: Host) -> None:
    with pytest.raises(TypeError):
        ssh_host.runner.run("echo hi")  # type: ignore[arg-type]


def test_exit_code_stdin_and_stderr(ssh_host: Host) -> None:
    done = ssh_host.runner.run(["sh", "-c", "cat; echo oops >&2; exit 3"], input=b"in\x00put")
    assert (done.returncode, done.stdout, done.stderr) == (3, "in\x00put", "oops\n")


def test_timeout_is_a_remote_command_error(ssh_host: Host) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteCommandError, match="did not finish") as info:
        ssh_host.runner.run(["sleep", "3"], timeout=0.3)
    assert info.value.argv == ["sleep", "3"]
    assert time.monotonic() - started < 5  # the command was killed, not waited for
    assert ssh_host.runner.run(["true"]).returncode == 0


def test_unknown_host_key_is_refused_without_retry(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    caplog.set_level(logging.WARNING, logger="x2c.hosts.ssh")
    with pytest.raises(HostKeyError) as info:
        open_host(ssh_cfg(cluster, known_hosts=empty))
    assert not [r for r in caplog.records if "attempt" in r.getMessage()]
    message = str(info.value)
    assert "host key of x2c-test (127.0.0.1:2222) is not in" in message
    assert str(empty) in message and "ssh-keyscan -p 2222 127.0.0.1" in message


def test_changed_host_key_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(
        "[127.0.0.1]:2222 " + " ".join(key.with_suffix(".pub").read_text().split()[:2])
    )
    with pytest.raises(HostKeyError, match="does not match the one in") as info:
        open_host(ssh_cfg(cluster, known_hosts=known))
    assert str(known) in str(info.value)


def test_missing_known_hosts_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    with pytest.raises(HostKeyError, match="does not exist"):
        open_host(ssh_cfg(cluster, known_hosts=tmp_path / "nope"))


def test_rejected_key_is_an_auth_error_tried_once(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host x2c-stranger\n  HostName 127.0.0.1\n  Port {cluster.port}\n  User root\n"
        f"  IdentityFile {key}\n  IdentitiesOnly yes\n"
    )
    caplog.set_level(logging.WARNING, logger="x2c.hosts.ssh")
    with pytest.raises(SSHAuthError, match="refused the login"):
        open_host(ssh_cfg(cluster, ssh="x2c-stranger", ssh_config=config))
    assert not [r for r in caplog.records if "attempt" in r.getMessage()]  # no retry


def test_unreachable_host_gives_up_after_capped_attempts(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host nowhere\n  HostName 127.0.0.1\n  Port 1\n  User root\n")
    caplog.set_level(logging.WARNING, logger="x2c.hosts.ssh")
    with pytest.raises(SSHConnectError, match="after 3 attempts"):
        open_host(
            ssh_cfg(
                cluster,
                ssh="nowhere",
                ssh_config=config,
                reconnect_attempts=3,
                reconnect_backoff_s=0.01,
            )
        )
    assert len([r for r in caplog.records if "attempt" in r.getMessage()]) == 3


def test_missing_ssh_config_is_a_config_error(cluster: Cluster, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_host(ssh_cfg(cluster, ssh_config=tmp_path / "missing"))


def test_proxyjump_through_the_alias(cluster: Cluster, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        cluster.ssh_config.read_text()
        + f"\nHost x2c-behind\n  HostName 127.0.0.1\n  Port {cluster.port}\n  User root\n"
        f"  IdentityFile {cluster.key}\n  ProxyJump x2c-test\n"
    )
    with open_host(ssh_cfg(cluster, ssh="x2c-behind", ssh_config=config)) as host:
        done = host.runner.run(["sh", "-c", 'echo "$SSH_CONNECTION"'])
    # through the jump host the session comes from sshd's own forwarding, still loopback
    assert done.returncode == 0 and done.stdout.split()[2:] == ["127.0.0.1", "2222"]


def test_one_connection_for_files_and_many_parallel_commands(
    ssh_host: Host, cluster: Cluster, remote_tmp: str
) -> None:
    """12 commands and 12 file writes at once stay on one TCP connection within MaxSessions."""
    ssh_host.runner.run(["mkdir", "-p", remote_tmp])
    errors: list[BaseException] = []

    def command(i: int) -> None:
        try:
            done = ssh_host.runner.run(["sh", "-c", f"sleep 0.1; echo {i}"])
            assert done.stdout == f"{i}\n"
        except BaseException as exc:
            errors.append(exc)

    def write(i: int) -> None:
        try:
            ssh_host.write_file(f"{remote_tmp}/f{i}", [b"x" * 100_000] * 5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=command, args=(i,)) for i in range(12)]
    threads += [threading.Thread(target=write, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    assert connections_from(os.getpid(), cluster.port) == 1
    for thread in threads:
        thread.join()
    assert errors == []
    assert connections_from(os.getpid(), cluster.port) == 1
    assert ssh_host.generation == 0
    sizes = ssh_host.runner.run(["sh", "-c", 'cat "$1"/f* | wc -c', "sh", remote_tmp])
    assert int(sizes.stdout) == 12 * 500_000


def test_keepalive_detects_a_frozen_server_and_the_next_call_reconnects(cluster: Cluster) -> None:
    """Freeze (SIGSTOP) this connection's sshd processes: keepalives go unanswered, the client
    drops the connection, and the next command opens a new one. Other users' sessions and the
    listener are untouched."""
    cfg = ssh_cfg(cluster, keepalive_interval=0.2, keepalive_count_max=2)
    with open_host(cfg) as host:
        client = host.fs.client
        pids = sshd_pids_for_client_port(cluster.port, client.get_extra_info("sockname")[1])
        assert pids
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            poll(client.is_closed, "keepalives to give up on the frozen server", timeout=10)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        done = host.runner.run(["echo", "back"])
        assert done.stdout == "back\n"
        assert host.generation == 1
        assert connections_from(os.getpid(), cluster.port) == 1


def test_file_methods(ssh_host: Host, remote_tmp: str) -> None:
    ssh_host.runner.run(["mkdir", "-p", remote_tmp])
    path = f"{remote_tmp}/a 'b' $(c)"
    assert ssh_host.write_file(path + ".part", [b"hello ", b"world"]) == 11
    ssh_host.write_file(path, [b"old"])
    ssh_host.rename(path + ".part", path)  # replaces
    assert ssh_host.size(path) == 11
    assert b"".join(ssh_host.read_file(path, chunk_size=4)) == b"hello world"
    ssh_host.remove(path)
    ssh_host.remove(path)  # missing is fine
    with pytest.raises(TransferError, match="No such file"):
        ssh_host.size(path)
    with pytest.raises(TransferError):
        ssh_host.write_file(f"{remote_tmp}/no/such/dir/x", [b"x"])


def test_small_file_methods(ssh_host: Host, remote_tmp: str) -> None:
    path = f"{remote_tmp}/sub/job 'x'.json"
    assert not ssh_host.exists(remote_tmp)
    assert ssh_host.read_bytes(path) is None
    ssh_host.makedirs(f"{remote_tmp}/sub")
    ssh_host.makedirs(f"{remote_tmp}/sub")  # an existing directory is fine
    ssh_host.write_atomic(path, b"first")
    ssh_host.write_atomic(path, b"0123456789")  # replaces, leaves no temporary file behind
    assert ssh_host.exists(path)
    assert ssh_host.read_bytes(path) == b"0123456789"
    assert ssh_host.read_bytes(path, tail=4) == b"6789"
    assert ssh_host.read_bytes(path, tail=100) == b"0123456789"
    listing = ssh_host.runner.run(["ls", "-A", f"{remote_tmp}/sub"])
    assert listing.stdout == "job 'x'.json\n"
    with pytest.raises(TransferError):
        ssh_host.write_atomic(f"{remote_tmp}/no/such/dir", b"x")


@pytest.mark.parametrize(
    ("operation", "warm"),
    [
        pytest.param(lambda host, path: host.read_bytes(path), True, id="read_bytes"),
        pytest.param(lambda host, path: host.read_bytes(path), False, id="read_bytes-cold"),
        pytest.param(lambda host, path: host.read_bytes(path, tail=3), True, id="tail"),
        pytest.param(lambda host, path: host.exists(path), True, id="exists"),
        pytest.param(lambda host, path: host.write_atomic(path, b"new"), True, id="write_atomic"),
        pytest.param(lambda host, path: host.makedirs(path + ".d"), True, id="makedirs"),
    ],
)
def test_a_connection_dropped_during_a_small_file_call_is_ssh_connect_error(
    cluster: Cluster, remote_tmp: str, operation: Callable[[Host, str], object], warm: bool
) -> None:
    """The recipe reads the registry, markers and logs through these calls: a drop while one is
    in flight must be SSHConnectError (the tasks retry only that), and the next call
    reconnects. The drop: this connection's sshd processes are frozen (SIGSTOP) so the call
    hangs until keepalives give up, then killed. ``warm``: SFTP was used before the drop (a
    request dies in flight); cold: sshfs must open its first SFTP channel on the dead
    connection (its pool then raises a bare ValueError)."""
    cfg = ssh_cfg(cluster, keepalive_interval=0.2, keepalive_count_max=2)
    with open_host(cfg) as host:
        path = f"{remote_tmp}/job.json"
        made = host.runner.run(
            ["sh", "-c", 'mkdir -p "$1" && printf old > "$2"', "sh", remote_tmp, path]
        )
        assert made.returncode == 0, made.stderr
        if warm:
            assert host.read_bytes(path) == b"old"
        client = host.fs.client
        pids = sshd_pids_for_client_port(cluster.port, client.get_extra_info("sockname")[1])
        assert pids
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            with pytest.raises(SSHConnectError, match="testcluster") as caught:
                operation(host, path)
            assert client.is_closed()
            assert caught.value.host == "testcluster"
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        assert host.read_bytes(path) in (b"old", b"new")
        assert host.generation == 1
        assert connections_from(os.getpid(), cluster.port) == 1


# -- the error mapping is complete ---------------------------------------------------------------

EXPECTED: dict[str, type[Exception]] = {
    "BreakReceived": RemoteCommandError,
    "ChannelListenError": SSHConnectError,
    "ChannelOpenError": SSHConnectError,
    "CompressionError": SSHConnectError,
    "ConfigParseError": ConfigError,
    "ConnectionLost": SSHConnectError,
    "DisconnectError": SSHConnectError,
    "Error": RemoteError,
    "HostKeyNotVerifiable": HostKeyError,
    "IllegalUserName": SSHAuthError,
    "KeyEncryptionError": SSHAuthError,
    "KeyExchangeFailed": SSHConnectError,
    "KeyExportError": SSHAuthError,
    "KeyGenerationError": SSHAuthError,
    "KeyImportError": SSHAuthError,
    "MACError": SSHConnectError,
    "PasswordChangeRequired": SSHAuthError,
    "PermissionDenied": SSHAuthError,
    "ProcessError": RemoteCommandError,
    "ProtocolError": SSHConnectError,
    "ProtocolNotSupported": SSHConnectError,
    "SFTPConnectionLost": SSHConnectError,
    "SFTPNoConnection": SSHConnectError,
    "ServiceNotAvailable": SSHConnectError,
    "SignalReceived": RemoteCommandError,
    "TerminalSizeChanged": RemoteCommandError,
    "TimeoutError": RemoteCommandError,
}


def _asyncssh_exceptions() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name, obj in vars(asyncssh).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    }


def _translate(exc: BaseException) -> Exception | None:
    return translate_ssh_error(exc, host="h", target="t", action="test", argv=["x"])


def test_every_asyncssh_exception_has_a_mapping() -> None:
    classes = _asyncssh_exceptions()
    sftp = {n for n, c in classes.items() if issubclass(c, asyncssh.SFTPError)}
    unlisted = set(classes) - set(EXPECTED) - sftp
    assert not unlisted, f"asyncssh exceptions with no mapping decided: {sorted(unlisted)}"
    for name, cls in classes.items():
        expected = EXPECTED.get(name, TransferError)
        mapped = _translate(cls.__new__(cls))
        assert type(mapped) is expected, f"{name} maps to {type(mapped).__name__}"


def test_os_errors_and_sshfs_rewrapped_errors() -> None:
    assert type(_translate(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))) is (
        SSHConnectError
    )
    denied = asyncssh.PermissionDenied("no")
    try:
        raise PermissionError("no") from denied  # what sshfs.utils.wrap_exceptions does
    except PermissionError as exc:
        assert type(_translate(exc)) is SSHAuthError
    assert type(_translate(FileNotFoundError(errno.ENOENT, "gone"))) is TransferError
    assert _translate(ValueError("not ours")) is None
    # sshfs's pool drops the ChannelOpenError of a lost connection and raises this instead
    pool = _translate(ValueError("Can't create any SFTP connections!"))
    assert type(pool) is SSHConnectError
    already = SSHConnectError("kept")
    assert _translate(already) is already
