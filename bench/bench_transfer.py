"""Throughput of x2c.transfers.stage against `cat file | ssh host 'cat > f'`, on the test cluster.

    python bench/bench_transfer.py [--mb 200] [--chunk-mb 1] [--max-requests 16]
        [--in-flight-mb 4] [--repeat 3] [--xnat-mb 2048]

Writes a random file of --mb MB locally, stages it through SFTP to the test cluster's sshd on
loopback (verified by size and md5) and copies it with the OpenSSH client as the baseline, both
in this run; prints MB/s for each, the ratio, and the peak RSS of this Python process. Two more
rows in the same run split x2c's cost: the same stage from a source that says it checks the md5
itself (so nothing is hashed: the transport alone), and the md5 of the file alone; one more
bounds what verifying here costs any transport: the OpenSSH client fed from this process with
the md5 computed on another thread.

It also stages an ``--xnat-mb`` MB file (default 2048, as a large NIfTI; 0 skips it) from a
``x2c devxnat`` server to the host the way a launch does (X -> Z -> Y, streamed, md5 checked
against XNAT's listing) against ``curl URL | ssh host 'cat > f'`` and against the same pipe
through this process with the md5 on a thread, in the same run (curl reads the credentials
from a file, not its command line).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import resource
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from x2c import transfers
from x2c.config import HostConfig
from x2c.hosts import ssh
from x2c.hosts.host import open_host
from x2c.sources import FileRef

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STATE = Path(os.environ.get("X2C_TESTCLUSTER_DIR", "/tmp/x2c-testcluster"))


class FileSource:
    """A ByteSource over local files, keyed by FileRef.path (the transfer hashes them)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with open(self.root / ref.path, "rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk


class UnhashedFileSource(FileSource):
    """The same files, claiming to check their md5 so the transfer hashes nothing: this
    measures the transport alone (it checks nothing; never use it outside this bench)."""

    checks_md5 = True


def md5_seconds(path: Path, chunk: int) -> float:
    """Seconds to md5 ``path`` here, read in ``chunk`` bytes as a stage reads it."""
    start = time.perf_counter()
    md5 = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            md5.update(block)
    return time.perf_counter() - start


def ssh_hashing_seconds(
    source: list[str] | Path, ssh_config: Path, target: str, chunk: int
) -> float:
    """Seconds for ``ssh host 'cat > target'`` fed through this process, from a file or from a
    command's output, with the md5 computed on another thread as it goes: what any transport
    that verifies on this machine can reach here."""
    start = time.perf_counter()
    md5 = hashlib.md5(usedforsecurity=False)
    blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
    hasher = threading.Thread(target=lambda: [md5.update(b) for b in iter(blocks.get, None)])
    hasher.start()
    ssh_cmd = ["ssh", "-F", str(ssh_config), "x2c-test", f"cat > {shlex.quote(target)}"]
    reader = None if isinstance(source, Path) else subprocess.Popen(source, stdout=subprocess.PIPE)
    with subprocess.Popen(ssh_cmd, stdin=subprocess.PIPE) as pipe:
        assert pipe.stdin is not None
        handle = open(source, "rb") if reader is None else reader.stdout  # noqa: SIM115
        assert handle is not None
        with handle:
            while block := handle.read(chunk):
                blocks.put(block)
                pipe.stdin.write(block)
        pipe.stdin.close()
        blocks.put(None)
        hasher.join()
        assert pipe.wait() == 0 and (reader is None or reader.wait() == 0)
    return time.perf_counter() - start


def print_rows(
    title: str, size_mb: float, rows: dict[str, list[float]], baseline: str, bound: str
) -> None:
    """MB/s best / median for each row of times, each row's ratio to ``baseline``, then the
    first row's (x2c's) ratio to ``bound`` (the same pipe, verifying as x2c does)."""
    print(title)
    for name, times in rows.items():
        best, median = size_mb / min(times), size_mb / statistics.median(times)
        print(f"  {name + ':':40}{best:7.1f} / {median:7.1f} MB/s")

    def ratio(name: str, against: str) -> None:
        base, times = rows[against], rows[name]
        ratio_best = min(base) / min(times)
        ratio_median = statistics.median(base) / statistics.median(times)
        label = f"{name} / {against}:"
        print(f"  ratio {label:66}{ratio_best:5.2f} / {ratio_median:5.2f}")

    for name in rows:
        if name != baseline:
            ratio(name, baseline)
    ratio(next(iter(rows)), bound)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def from_xnat(host: Any, ssh_config: Path, remote: str, mb: int, repeat: int, chunk: int) -> None:
    """The X -> Z -> Y case: devxnat to the host through x2c, against curl | ssh."""
    from tests.fixtures.xnat_server import XnatServer
    from x2c.xnat import XnatByteSource, XnatFileRef, connect, list_resource_files, path_of

    with tempfile.TemporaryDirectory(prefix="bench-x2y-") as tmp:
        server = XnatServer(data_dir=Path(tmp) / "data", demo_data=1)
        server.start()
        try:
            eid = "X2C_E00001"
            files = ("data", "experiments", eid, "resources", "BENCH", "files")
            config = Path(tmp) / "curl.cfg"
            config.touch(mode=0o600)
            config.write_text(f'user = "{server.user}:{server.password}"\n')
            # the upload goes through curl, so this process's peak RSS is x2c's own
            url = server.url + path_of(*files, "big.bin") + "?inbody=true"
            put = subprocess.Popen(
                ["curl", "-sS", "--fail", "-o", "/dev/null", "-K", str(config), "-T", "-", url],
                stdin=subprocess.PIPE,
            )
            assert put.stdin is not None
            block = bytearray(os.urandom(1 << 20))
            for i in range(mb):
                block[:8] = i.to_bytes(8, "big")
                put.stdin.write(block)
            put.stdin.close()
            assert put.wait() == 0, "the upload to devxnat failed"
            session = connect(xnat_config_of(server))
            [listed] = list_resource_files(session, eid, "BENCH")
            ref = XnatFileRef(path="big.bin", size=listed.size, md5=listed.digest, uri=listed.uri)
            x2c_times: list[float] = []
            bound_times: list[float] = []
            base_times: list[float] = []
            rss_before = rss_mb()
            for rep in range(repeat):
                dest = f"{remote}/x{rep}"
                start = time.perf_counter()
                report = transfers.stage(
                    XnatByteSource(session), [ref], host, dest, max_parallel=1, chunk_size=chunk
                )
                x2c_times.append(time.perf_counter() - start)
                assert report.copied == 1
                curl_cmd = ["curl", "-sS", "--fail", "-K", str(config), server.url + listed.uri]
                bound_times.append(
                    ssh_hashing_seconds(curl_cmd, ssh_config, f"{dest}/hashed.bin", chunk)
                )
                start = time.perf_counter()
                curl = subprocess.Popen(curl_cmd, stdout=subprocess.PIPE)
                target = shlex.quote(f"{dest}/baseline.bin")
                subprocess.run(
                    ["ssh", "-F", str(ssh_config), "x2c-test", f"cat > {target}"],
                    stdin=curl.stdout,
                    check=True,
                )
                assert curl.wait() == 0
                base_times.append(time.perf_counter() - start)
                host.runner.run(["rm", "-rf", "--", dest])
            session.close()
        finally:
            server.stop()
    print_rows(
        f"devxnat -> Z -> host, {mb * (1 << 20) / 1e6:.0f} MB, {repeat} interleaved runs "
        "(best / median):",
        mb * (1 << 20) / 1e6,
        {
            "x2c from XNAT (md5 checked once)": x2c_times,
            "curl | here + md5 thread | ssh": bound_times,
            "curl | ssh 'cat > f'": base_times,
        },
        "curl | ssh 'cat > f'",
        "curl | here + md5 thread | ssh",
    )
    print(f"  peak RSS of this process: {rss_before:.0f} MB before, {rss_mb():.0f} MB after")


def xnat_config_of(server: Any) -> Any:
    from pydantic import SecretStr

    from x2c.config import XnatConfig

    return XnatConfig(url=server.url, user=server.user, password=SecretStr(server.password))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--chunk-mb", type=float, default=transfers.CHUNK_SIZE / (1 << 20))
    parser.add_argument("--max-requests", type=int, default=ssh.SFTP_MAX_REQUESTS)
    parser.add_argument("--in-flight-mb", type=float, default=ssh.BYTES_IN_FLIGHT / (1 << 20))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--xnat-mb", type=int, default=2048)
    args = parser.parse_args()
    ssh.SFTP_MAX_REQUESTS = args.max_requests
    ssh.BYTES_IN_FLIGHT = int(args.in_flight_mb * (1 << 20))
    chunk = int(args.chunk_mb * (1 << 20))
    ssh_config = STATE / "ssh/ssh_config"
    cfg = HostConfig(
        name="bench",
        ssh="x2c-test",
        ssh_config=ssh_config,
        known_hosts=STATE / "ssh/known_hosts",
        workdir="/tmp",
    )
    remote = f"/tmp/x2c-bench-{secrets.token_hex(4)}"
    rows: dict[str, list[float]] = {
        "x2c (md5 computed here)": [],
        "x2c, nothing hashed": [],
        "md5 of the file alone": [],
        "here + md5 thread | ssh": [],
        "cat | ssh 'cat > f'": [],
    }
    stages = list(zip(rows, (FileSource, UnhashedFileSource), strict=False))
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.bin"
        md5 = hashlib.md5()
        with open(src, "wb") as handle:
            for _ in range(args.mb):
                block = os.urandom(1 << 20)
                md5.update(block)
                handle.write(block)
        size = src.stat().st_size
        ref = FileRef(path="big.bin", size=size, md5=md5.hexdigest())
        rss_before = rss_mb()
        with open_host(cfg) as host:
            for rep in range(args.repeat):  # interleaved, so load from elsewhere hits each row
                dest = f"{remote}/{rep}"
                for name, source in stages:
                    start = time.perf_counter()
                    report = transfers.stage(
                        source(Path(tmp)), [ref], host, dest, max_parallel=1, chunk_size=chunk
                    )
                    rows[name].append(time.perf_counter() - start)
                    assert report.copied == 1
                    host.runner.run(["rm", "-f", "--", f"{dest}/big.bin"])
                rows["md5 of the file alone"].append(md5_seconds(src, chunk))
                rows["here + md5 thread | ssh"].append(
                    ssh_hashing_seconds(src, ssh_config, f"{dest}/hashed.bin", chunk)
                )
                start = time.perf_counter()
                with open(src, "rb") as handle:
                    target = shlex.quote(f"{dest}/baseline.bin")
                    subprocess.run(
                        ["ssh", "-F", str(ssh_config), "x2c-test", f"cat > {target}"],
                        stdin=handle,
                        check=True,
                    )
                rows["cat | ssh 'cat > f'"].append(time.perf_counter() - start)
                transfers.stage(FileSource(Path(tmp)), [ref], host, dest, max_parallel=1)
                start = time.perf_counter()
                again = transfers.stage(FileSource(Path(tmp)), [ref], host, dest, max_parallel=1)
                skip_s = time.perf_counter() - start
                assert again.skipped == 1
                host.runner.run(["rm", "-rf", "--", dest])
            rss_local = rss_mb()
            if args.xnat_mb:
                from_xnat(host, ssh_config, remote, args.xnat_mb, args.repeat, chunk)
            host.runner.run(["rm", "-rf", "--", remote])
        rss_after = rss_mb()
    print_rows(
        f"local file, {size / 1e6:.0f} MB, chunk {chunk >> 10} KiB, SFTP max_requests "
        f"{args.max_requests}, {args.in_flight_mb:g} MiB of writes in flight, {args.repeat} "
        "interleaved runs (best / median):",
        size / 1e6,
        rows,
        "cat | ssh 'cat > f'",
        "here + md5 thread | ssh",
    )
    print(f"repeated stage (skipped after md5 on Y, one command): {skip_s:.2f} s")
    print(
        f"peak RSS of this process: {rss_before:.0f} MB before staging, {rss_local:.0f} MB after "
        f"the local file, {rss_after:.0f} MB after everything"
    )


if __name__ == "__main__":
    main()
