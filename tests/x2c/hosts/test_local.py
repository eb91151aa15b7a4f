"""LocalHost: the same interface as an SSH host, on this machine, under a hostile tmp path."""

from __future__ import annotations

from pathlib import Path

import pytest

from x2c.config import HostConfig
from x2c.errors import RemoteCommandError, TransferError
from x2c.hosts import LocalHost, LocalRunner, open_host


@pytest.fixture
def weird_tmp(tmp_path: Path) -> Path:
    """A directory whose name needs quoting everywhere (spaces, quotes, $, backticks, newline)."""
    path = tmp_path / "we ird 'q' \"d\" $(x) `y`\nz"
    path.mkdir()
    return path


def test_open_host_without_ssh_is_local(tmp_path: Path) -> None:
    with open_host(HostConfig(name="here", workdir=str(tmp_path))) as host:
        assert isinstance(host, LocalHost)
        assert isinstance(host.runner, LocalRunner)
        assert host.name == "here" and host.generation == 0
        assert host.fs.protocol[0] == "file"


def test_hostile_argv_round_trip(weird_tmp: Path) -> None:
    done = LocalHost().runner.run(["printf", "%s", str(weird_tmp)])
    assert (done.returncode, done.stdout) == (0, str(weird_tmp))


def test_file_methods_under_a_hostile_path(weird_tmp: Path) -> None:
    host = LocalHost()
    path = str(weird_tmp / "a file")
    assert host.write_file(path + ".part", [b"hello ", b"world"]) == 11
    host.write_file(path, [b"old"])
    host.rename(path + ".part", path)
    assert host.size(path) == 11
    assert list(host.read_file(path, chunk_size=4)) == [b"hell", b"o wo", b"rld"]
    host.remove(path)
    host.remove(path)
    assert sorted(p.name for p in weird_tmp.iterdir()) == []
    with pytest.raises(TransferError, match="could not stat"):
        host.size(path)
    with pytest.raises(TransferError, match="could not create"):
        host.write_file(str(weird_tmp / "no" / "dir"), [b"x"])


def test_small_file_methods_under_a_hostile_path(weird_tmp: Path) -> None:
    host = LocalHost()
    top = str(weird_tmp / "job 'dir'")
    path = f"{top}/sub/job.json"
    assert not host.exists(top)
    assert host.read_bytes(path) is None
    host.makedirs(f"{top}/sub")
    host.makedirs(f"{top}/sub")  # an existing directory is fine
    host.write_atomic(path, b"first")
    host.write_atomic(path, b"0123456789")  # replaces, leaves no temporary file behind
    assert host.exists(path)
    assert host.read_bytes(path) == b"0123456789"
    assert host.read_bytes(path, tail=4) == b"6789"
    assert host.read_bytes(path, tail=100) == b"0123456789"
    assert sorted(p.name for p in (weird_tmp / "job 'dir'" / "sub").iterdir()) == ["job.json"]
    with pytest.raises(TransferError, match="could not read"):
        host.read_bytes(top)  # a directory is an error, not "missing"
    with pytest.raises(TransferError, match="could not create"):
        host.write_atomic(f"{top}/no/such/dir", b"x")


def test_missing_program_is_a_remote_command_error() -> None:
    with pytest.raises(RemoteCommandError, match="not installed"):
        LocalHost().runner.run(["x2c-no-such-program"])
