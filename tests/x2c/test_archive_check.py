"""The result-archive check on a real host, local and over the test cluster's sshd (issue 9):
every hostile member kind is refused by name, in zip and tar.gz; benign archives pass with
their md5 and size measured on the host."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.archives import TAR_HOSTILE, ZIP_HOSTILE, tar_bytes, zip_bytes
from tests.x2c.hosts.helpers import CountingRunner, remote_tmp, ssh_cfg
from x2c.archive_check import TAIL_FIRST, check_archive
from x2c.errors import UnsafeArchiveError
from x2c.hosts.host import Host, LocalHost, open_host

__all__ = ["remote_tmp"]  # fixture used here


@pytest.fixture(params=["local", pytest.param("ssh", marks=pytest.mark.cluster)])
def on_host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Host, str]]:
    """(host, a job directory on it): this machine, or the test cluster over SSH."""
    if request.param == "local":
        host: Host = LocalHost()
        root = str(tmp_path / "job 'dir' $(x)")
    else:
        host = open_host(ssh_cfg(request.getfixturevalue("cluster")))
        root = f"{request.getfixturevalue('remote_tmp')}/job"
    with host:
        host.makedirs(root)
        yield host, root


def _put(host: Host, root: str, name: str, data: bytes) -> str:
    path = posixpath.join(root, name)
    host.write_file(path, [data])
    return path


@pytest.mark.parametrize(("fmt", "kind"), [("zip", k) for k in ZIP_HOSTILE])
def test_a_hostile_zip_member_is_refused_by_name(
    on_host: tuple[Host, str], fmt: str, kind: str
) -> None:
    host, root = on_host
    path = _put(host, root, "RESULT.zip", zip_bytes(kind))
    with pytest.raises(UnsafeArchiveError) as info:
        check_archive(host, path, root=root)
    assert info.value.member == ZIP_HOSTILE[kind]
    assert repr(ZIP_HOSTILE[kind]) in str(info.value)
    assert "rerun the job" in str(info.value)


@pytest.mark.parametrize("kind", list(TAR_HOSTILE))
def test_a_hostile_tar_member_is_refused_by_name(on_host: tuple[Host, str], kind: str) -> None:
    host, root = on_host
    path = _put(host, root, "RESULT.tar.gz", tar_bytes(kind))
    with pytest.raises(UnsafeArchiveError) as info:
        check_archive(host, path, root=root)
    assert info.value.member == TAR_HOSTILE[kind]
    assert repr(TAR_HOSTILE[kind]) in str(info.value)


@pytest.mark.parametrize(
    ("name", "data", "members"),
    [
        ("RESULT.zip", zip_bytes(), ("stats.json", "sub/mask.txt")),
        ("RESULT.tar.gz", tar_bytes(), ("sub", "stats.json", "sub/mask.txt")),
    ],
)
def test_a_benign_archive_is_listed_with_its_own_digest(
    on_host: tuple[Host, str], name: str, data: bytes, members: tuple[str, ...]
) -> None:
    host, root = on_host
    path = _put(host, root, name, data)
    listing = check_archive(host, path, root=root)
    assert listing.members == members
    assert listing.ref.path == name
    assert listing.ref.size == len(data)
    assert listing.ref.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_a_zip_is_checked_from_its_central_directory_only(on_host: tuple[Host, str]) -> None:
    """A zip whose central directory is larger than the first tail read: two tail reads, and
    far fewer bytes read than the archive holds (the members' data never crosses)."""
    host, root = on_host
    data = zip_bytes(extra_members=3000)
    path = _put(host, root, "BIG.zip", data)
    reads: list[int] = []
    read_bytes = host.read_bytes

    def counting(p: str, *, tail: int | None = None) -> bytes | None:
        out = read_bytes(p, tail=tail)
        reads.append(len(out or b""))
        return out

    host.read_bytes = counting  # type: ignore[method-assign]
    host.read_file = None  # type: ignore[assignment,method-assign]  # a zip is never streamed
    listing = check_archive(host, path, root=root)
    assert len(listing.members) == 3002
    assert len(reads) == 2 and reads[0] == TAIL_FIRST and reads[1] > TAIL_FIRST
    assert sum(reads) < len(data) + TAIL_FIRST


def test_a_file_that_is_no_archive_is_refused(on_host: tuple[Host, str]) -> None:
    host, root = on_host
    for name in ("RESULT.zip", "RESULT.tar.gz"):
        path = _put(host, root, name, b"not an archive at all\n" * 10)
        with pytest.raises(UnsafeArchiveError, match="not a readable"):
            check_archive(host, path, root=root)
    with pytest.raises(UnsafeArchiveError, match=r"neither a \.zip nor a tar"):
        check_archive(host, _put(host, root, "RESULT.rar", b"x"), root=root)


def test_the_checksum_is_one_command_on_the_host(on_host: tuple[Host, str]) -> None:
    host, root = on_host
    path = _put(host, root, "RESULT.tar.gz", tar_bytes())
    runner = CountingRunner(host.runner)
    host.runner = runner
    check_archive(host, path, root=root)
    assert len(runner.calls) == 1
