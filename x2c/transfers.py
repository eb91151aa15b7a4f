"""Moving verified files between any :class:`~x2c.sources.ByteSource` and a compute host.

* :func:`stage` (X -> Y through Z): chunks from the source go straight into writes on the host,
  several files at once, each checked against its size and md5 as it streams and renamed into
  place only when it matches, so a file with its final name is always complete. Files already on
  the host with the right size and md5 are found by one batched command and skipped, so a
  repeated or interrupted stage costs almost nothing. Nothing touches Z's disk unless
  ``staging_dir`` is given (then X -> Z file -> Y).
* :class:`HostByteSource` and :func:`describe` (Y -> X): a file on the host as a ByteSource, with
  its size and md5 computed on the host, so results stream on to XNAT without Z's disk.
* :func:`fetch` (Y -> Z): one file from the host to a local path, verified.

Generic: no XNAT here; the XNAT layer brings its own ByteSource.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from x2c.errors import IntegrityError, RemoteCommandError, SSHConnectError, TransferError, X2CError
from x2c.hosts.host import Host, LocalHost
from x2c.paths import contained_relpath
from x2c.sources import ByteSource, FileRef

log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes per chunk read from a source and written in one pipelined SFTP write. Measured with
``bench/bench_transfer.py``: 1 MiB moves as fast as 4 MiB and keeps the peak RSS of staging a
file from XNAT 26 MB lower (each chunk is copied several times on its way out)."""

ATTEMPTS = 3
"""Tries per file when the SSH connection drops mid-transfer (the host reconnects in between)."""

# One probe command carries at most this many bytes of arguments: the remote shell gets the whole
# command line as one argument, and Linux caps a single argument at 128 KiB (MAX_ARG_STRLEN).
_PROBE_ARG_BYTES = 96_000

# For each (expected size, path) pair: print "<index> <size> <md5>" for files that exist, with md5
# "-" when the size differs from the expected one ("-" as expected size: always hash). Hashing
# from stdin keeps file names out of md5sum's output, whatever characters they contain.
_PROBE_SCRIPT = r"""i=0
while [ "$#" -ge 2 ]; do
  want=$1 f=$2 n=$i
  shift 2
  i=$((i + 1))
  [ -f "$f" ] || continue
  s=$(wc -c < "$f") || continue
  s=$((s))
  if [ "$want" = - ] || [ "$want" = "$s" ]; then
    m=$(md5sum < "$f") || continue
    printf '%s %s %s\n' "$n" "$s" "${m%% *}"
  else
    printf '%s %s -\n' "$n" "$s"
  fi
done
"""


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file: ``copied`` or ``skipped`` (already there and verified)."""

    path: str
    action: Literal["copied", "skipped"]
    bytes: int
    seconds: float
    attempts: int = 0


@dataclass(frozen=True)
class StageReport:
    """The outcome of :func:`stage`, one :class:`FileOutcome` per file in the order given."""

    dest_dir: str
    files: tuple[FileOutcome, ...]
    seconds: float

    @property
    def copied(self) -> int:
        """How many files were written."""
        return sum(f.action == "copied" for f in self.files)

    @property
    def skipped(self) -> int:
        """How many files were already on the host, verified, and left alone."""
        return sum(f.action == "skipped" for f in self.files)

    @property
    def bytes_copied(self) -> int:
        """Bytes written to the host."""
        return sum(f.bytes for f in self.files if f.action == "copied")


def safe_relpath(path: str) -> str:
    """Return ``path`` normalised, or raise TransferError if it could leave its directory."""
    return contained_relpath(path, error=TransferError, inside="the destination")


def probe(host: Host, files: Sequence[tuple[int | None, str]]) -> dict[int, tuple[int, str | None]]:
    """Size and md5 of files on ``host``, in as few commands as the argument limit allows.

    ``files`` lists (expected size or None, path). Returns, by index into ``files``, (size, md5)
    for those that exist; md5 is None when the size differs from the expected one (not hashed).
    """
    found: dict[int, tuple[int, str | None]] = {}
    start = 0
    while start < len(files):
        argv = ["sh", "-c", _PROBE_SCRIPT, "x2c-probe"]
        budget = _PROBE_ARG_BYTES
        end = start
        while end < len(files):
            want, path = files[end]
            cost = len(path.encode()) * 4 + 24  # room for shlex quoting
            if end > start and cost > budget:
                break
            argv += ["-" if want is None else str(want), path]
            budget -= cost
            end += 1
        done = host.runner.run(argv)
        if done.returncode != 0:
            raise RemoteCommandError(
                f"checking {end - start} file(s) on {host.name} failed (exit {done.returncode}): "
                f"{done.stderr.strip()[:500]}; check that sh, wc and md5sum are available",
                host=host.name,
                argv=argv[:4],
                returncode=done.returncode,
                stderr=done.stderr,
            )
        for line in done.stdout.splitlines():
            index, size, md5 = line.split(" ")
            found[start + int(index)] = (int(size), None if md5 == "-" else md5)
        start = end
    return found


def _mkdirs(host: Host, dirs: Sequence[str]) -> None:
    """``mkdir -p`` every directory in ``dirs``, as few commands as the argument limit allows."""
    todo = sorted(set(dirs))
    start = 0
    while start < len(todo):
        end, budget = start, _PROBE_ARG_BYTES
        while end < len(todo) and (end == start or len(todo[end].encode()) * 4 + 4 < budget):
            budget -= len(todo[end].encode()) * 4 + 4
            end += 1
        argv = ["mkdir", "-p", "--", *todo[start:end]]
        done = host.runner.run(argv)
        if done.returncode != 0:
            raise RemoteCommandError(
                f"could not create {end - start} directories on {host.name}: "
                f"{done.stderr.strip()[:500]}; check permissions and free space",
                host=host.name,
                argv=argv[:4],
                returncode=done.returncode,
                stderr=done.stderr,
            )
        start = end


def _copy(
    chunks: Callable[[], Iterator[bytes]],
    ref: FileRef,
    dest: Host,
    final: str,
    *,
    recover: Sequence[Host],
    attempts: int = ATTEMPTS,
    source_checks_md5: bool = False,
) -> FileOutcome:
    """Stream ``chunks()`` into ``final`` on ``dest`` via a part file; verify; rename.

    The md5 is computed here unless ``source_checks_md5`` says the chunks come from a source
    that checks it itself (its iterator raises before its end on a mismatch): each byte is
    hashed once, which on a busy Z is a good part of a transfer's CPU.
    """
    started = time.monotonic()
    last: SSHConnectError | None = None
    for attempt in range(1, attempts + 1):
        generations = [h.generation for h in recover]
        part = f"{final}.part-{secrets.token_hex(6)}"
        md5 = None if source_checks_md5 else hashlib.md5(usedforsecurity=False)
        try:
            written = dest.write_file(part, chunks() if md5 is None else _hashing(chunks(), md5))
            _verify(ref, written, None if md5 is None else md5.hexdigest(), dest, part)
            dest.rename(part, final)
        except SSHConnectError as exc:
            last = exc
            log.warning(
                "%s: attempt %d of %d lost its connection: %s", ref.path, attempt, attempts, exc
            )
            for host, generation in zip(recover, generations, strict=True):
                host.reconnect(generation)
            with suppress(X2CError):
                dest.remove(part)
            continue
        except BaseException:
            with suppress(X2CError):
                dest.remove(part)
            raise
        return FileOutcome(ref.path, "copied", written, time.monotonic() - started, attempt)
    raise SSHConnectError(
        f"{ref.path}: the connection dropped on each of {attempts} attempts; last error: {last}; "
        "check the network to the host, then rerun (verified files will be skipped)",
        host=dest.name,
    ) from last


def _hashing(chunks: Iterator[bytes], md5: hashlib._Hash) -> Iterator[bytes]:
    for chunk in chunks:
        md5.update(chunk)
        yield chunk


def _verify(ref: FileRef, written: int, md5: str | None, dest: Host, part: str) -> None:
    if written != ref.size:
        raise IntegrityError(
            f"{ref.path}: received {written} bytes, the source lists {ref.size}; the partial "
            "file was removed; check the file at the source and stage again",
            name=ref.path,
            expected=str(ref.size),
            actual=str(written),
        )
    if ref.md5 is not None and md5 is not None and md5 != ref.md5.lower():
        raise IntegrityError(
            f"{ref.path}: md5 of the bytes received is {md5}, the source lists {ref.md5}; the "
            "partial file was removed; check the file at the source and stage again",
            name=ref.path,
            expected=ref.md5,
            actual=md5,
        )
    landed = dest.size(part)
    if landed != written:
        raise IntegrityError(
            f"{ref.path}: wrote {written} bytes but {landed} landed on {dest.name}; the partial "
            "file was removed; check the host's free space and stage again",
            name=ref.path,
            expected=str(written),
            actual=str(landed),
        )


def _verified(ref: FileRef, seen: tuple[int, str | None] | None) -> bool:
    return (
        seen is not None
        and ref.md5 is not None
        and seen[0] == ref.size
        and seen[1] == ref.md5.lower()
    )


def _run_parallel(
    jobs: Sequence[Callable[[], FileOutcome]], max_parallel: int
) -> list[FileOutcome]:
    """Run ``jobs`` on up to ``max_parallel`` threads; after a failure start no new job, let the
    running ones finish, and raise the first error."""
    if not jobs:
        return []
    failed = threading.Event()

    def guarded(job: Callable[[], FileOutcome]) -> FileOutcome | None:
        if failed.is_set():
            return None
        try:
            return job()
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, min(max_parallel, len(jobs)))) as pool:
        futures = [pool.submit(guarded, job) for job in jobs]
        wait(futures)
    results: list[FileOutcome] = []
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error
        outcome = future.result()
        assert outcome is not None  # only skipped after a failure, which raised above
        results.append(outcome)
    return results


def _from_source(
    source: ByteSource, ref: FileRef, chunk_size: int
) -> Callable[[], Iterator[bytes]]:
    return lambda: source.iter_bytes(ref, chunk_size)


def _checks_md5(source: ByteSource) -> bool:
    """Whether ``source`` checks each file's md5 itself (see :class:`~x2c.sources.ByteSource`)."""
    return bool(getattr(source, "checks_md5", False))


def _from_local_file(path: str, chunk_size: int) -> Callable[[], Iterator[bytes]]:
    return lambda: LocalHost().read_file(path, chunk_size)


def stage(
    source: ByteSource,
    refs: Sequence[FileRef],
    host: Host,
    dest_dir: str,
    *,
    max_parallel: int,
    staging_dir: Path | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> StageReport:
    """Copy ``refs`` from ``source`` into ``dest_dir`` on ``host``, verified, skipping done ones.

    Each ``ref.path`` is relative to ``dest_dir`` (absolute or ``..`` paths are refused). At most
    ``max_parallel`` files stream at once (``source.iter_bytes`` is called from that many
    threads); memory stays at a few chunks per file whatever the file sizes. With
    ``staging_dir``, each file is first written and verified there on this machine, then sent on.
    A file already on the host with the right size and md5 is skipped: one batched command
    checks them all. Raises IntegrityError (a file does not match its size or md5; its partial
    file is gone), SSHConnectError (the connection kept dropping), TransferError or
    RemoteCommandError.
    """
    started = time.monotonic()
    targets = [(ref, posixpath.join(dest_dir, safe_relpath(ref.path))) for ref in refs]
    finals = [final for _ref, final in targets]
    if len(set(finals)) != len(finals):
        twice = sorted({f for f in finals if finals.count(f) > 1})
        raise TransferError(
            f"two files would land on the same path in {dest_dir}: {twice[:5]}; check the "
            "source's file names"
        )
    seen = probe(host, [(ref.size, final) for ref, final in targets])
    outcomes: dict[int, FileOutcome] = {}
    todo: list[int] = []
    for index, (ref, _final) in enumerate(targets):
        if _verified(ref, seen.get(index)):
            outcomes[index] = FileOutcome(ref.path, "skipped", ref.size, 0.0)
        else:
            todo.append(index)
    log.info(
        "stage to %s:%s: %d to copy, %d verified and skipped",
        host.name,
        dest_dir,
        len(todo),
        len(outcomes),
    )
    if todo:
        _mkdirs(host, [posixpath.dirname(targets[i][1]) for i in todo])
        if staging_dir is not None:
            staged = _stage_locally(
                source, [targets[i][0] for i in todo], staging_dir, max_parallel, chunk_size
            )
        jobs = []
        for index in todo:
            ref, final = targets[index]
            if staging_dir is not None:
                chunks, checked = _from_local_file(staged[ref.path], chunk_size), False
            else:
                chunks, checked = _from_source(source, ref, chunk_size), _checks_md5(source)
            jobs.append(
                partial(_copy, chunks, ref, host, final, recover=[host], source_checks_md5=checked)
            )
        for index, outcome in zip(todo, _run_parallel(jobs, max_parallel), strict=True):
            outcomes[index] = outcome
    return StageReport(
        dest_dir=dest_dir,
        files=tuple(outcomes[i] for i in range(len(targets))),
        seconds=time.monotonic() - started,
    )


def _stage_locally(
    source: ByteSource,
    refs: Sequence[FileRef],
    staging_dir: Path,
    max_parallel: int,
    chunk_size: int,
) -> dict[str, str]:
    """X -> Z: write ``refs`` under ``staging_dir`` (verified, reused when already there)."""
    local = LocalHost("staging")
    paths = {ref.path: os.path.join(staging_dir, safe_relpath(ref.path)) for ref in refs}
    seen = probe(local, [(ref.size, paths[ref.path]) for ref in refs])
    jobs = []
    for index, ref in enumerate(refs):
        if not _verified(ref, seen.get(index)):
            Path(paths[ref.path]).parent.mkdir(parents=True, exist_ok=True)
            chunks = _from_source(source, ref, chunk_size)
            jobs.append(
                partial(
                    _copy,
                    chunks,
                    ref,
                    local,
                    paths[ref.path],
                    recover=[],
                    source_checks_md5=_checks_md5(source),
                )
            )
    _run_parallel(jobs, max_parallel)
    return paths


class HostByteSource:
    """Files under ``root`` on a host as a :class:`~x2c.sources.ByteSource` (Y -> Z -> X).

    Pair it with :func:`describe` to stream a results archive from Y to XNAT through Z without
    touching Z's disk.
    """

    def __init__(self, host: Host, root: str) -> None:
        self.host = host
        self.root = root

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the bytes of ``root/ref.path`` on the host in chunks."""
        return self.host.read_file(posixpath.join(self.root, safe_relpath(ref.path)), chunk_size)


def describe(host: Host, path: str, *, root: str | None = None) -> FileRef:
    """A FileRef for ``path`` on ``host``: size and md5 computed there by one command.

    ``ref.path`` is relative to ``root`` (default: the file's directory), matching a
    :class:`HostByteSource` over the same root.
    """
    seen = probe(host, [(None, path)]).get(0)
    if seen is None:
        raise TransferError(
            f"{path!r} is not a readable file on {host.name}; check that the job wrote it",
            host=host.name,
        )
    rel = posixpath.relpath(path, root if root is not None else posixpath.dirname(path))
    return FileRef(path=safe_relpath(rel), size=seen[0], md5=seen[1])


def fetch(host: Host, path: str, local_path: Path, *, chunk_size: int = CHUNK_SIZE) -> FileOutcome:
    """Copy ``path`` on ``host`` to ``local_path`` (Y -> Z), verified against its md5 on Y.

    Written through a part file and renamed, so ``local_path`` is complete or absent.
    """
    ref = describe(host, path)
    ref = FileRef(path=str(local_path), size=ref.size, md5=ref.md5)
    local_path.parent.mkdir(parents=True, exist_ok=True)
    return _copy(
        lambda: host.read_file(path, chunk_size), ref, LocalHost(), str(local_path), recover=[host]
    )
