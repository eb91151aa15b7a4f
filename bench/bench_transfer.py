"""Throughput of x2c.transfers.stage against `cat file | ssh host 'cat > f'`, on the test cluster.

    python bench/bench_transfer.py [--mb 200] [--chunk-mb 4] [--max-requests 16]
        [--writes-in-flight 2] [--repeat 3] [--xnat-mb 2048]

Writes a random file of --mb MB locally, stages it through SFTP to the test cluster's sshd on
loopback (verified by size and md5) and copies it with the OpenSSH client as the baseline, both
in this run; prints MB/s for each, the ratio, and the peak RSS of this Python process.

With ``--xnat-mb N`` (0: skipped) it also stages an N MB file from a ``x2c devxnat`` server to
the host the way a launch does (X -> Z -> Y, streamed, md5 checked against XNAT's listing)
against ``curl URL | ssh host 'cat > f'`` in the same run (curl reads the credentials from a
file, not its command line).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import secrets
import shlex
import statistics
import subprocess
import sys
import tempfile
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
    """A ByteSource over local files, keyed by FileRef.path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with open(self.root / ref.path, "rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def from_xnat(host: Any, ssh_config: Path, remote: str, mb: int, repeat: int) -> None:
    """The X -> Z -> Y case: devxnat to the host through x2c, against curl | ssh."""
    import requests

    from tests.fixtures.xnat_server import XnatServer
    from x2c.xnat import XnatByteSource, XnatFileRef, connect, list_resource_files, path_of

    with tempfile.TemporaryDirectory(prefix="bench-x2y-") as tmp:
        server = XnatServer(data_dir=Path(tmp) / "data", demo_data=1)
        server.start()
        try:
            eid = "X2C_E00001"
            files = ("data", "experiments", eid, "resources", "BENCH", "files")
            block = os.urandom(1 << 20)
            plain = requests.Session()
            plain.auth = (server.user, server.password)
            plain.put(
                server.url + path_of(*files, "big.bin"),
                params={"inbody": "true"},
                data=(i.to_bytes(8, "big") + block[8:] for i in range(mb)),
                timeout=600,
            ).raise_for_status()
            config = Path(tmp) / "curl.cfg"
            config.touch(mode=0o600)
            config.write_text(f'user = "{server.user}:{server.password}"\n')
            session = connect(xnat_config_of(server))
            [listed] = list_resource_files(session, eid, "BENCH")
            ref = XnatFileRef(path="big.bin", size=listed.size, md5=listed.digest, uri=listed.uri)
            x2c_times, base_times = [], []
            for rep in range(repeat):
                dest = f"{remote}/x{rep}"
                start = time.perf_counter()
                report = transfers.stage(XnatByteSource(session), [ref], host, dest, max_parallel=1)
                x2c_times.append(time.perf_counter() - start)
                assert report.copied == 1
                start = time.perf_counter()
                curl = subprocess.Popen(
                    ["curl", "-sS", "--fail", "-K", str(config), server.url + listed.uri],
                    stdout=subprocess.PIPE,
                )
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
    size = mb * (1 << 20) / 1e6
    x2c_best, base_best = min(x2c_times), min(base_times)
    x2c_med, base_med = statistics.median(x2c_times), statistics.median(base_times)
    print(f"devxnat -> Z -> host, {size:.0f} MB, {repeat} interleaved runs (best / median):")
    rows = (
        ("x2c stage from XNAT (md5 checked)", size / x2c_best, size / x2c_med),
        ("curl | ssh 'cat > f' baseline", size / base_best, size / base_med),
        ("ratio x2c / baseline", base_best / x2c_best, base_med / x2c_med),
    )
    for name, best, median in rows:
        print(f"{name + ':':36}{best:6.2f} / {median:6.2f}")


def xnat_config_of(server: Any) -> Any:
    from pydantic import SecretStr

    from x2c.config import XnatConfig

    return XnatConfig(url=server.url, user=server.user, password=SecretStr(server.password))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--chunk-mb", type=float, default=transfers.CHUNK_SIZE / (1 << 20))
    parser.add_argument("--max-requests", type=int, default=ssh.SFTP_MAX_REQUESTS)
    parser.add_argument("--writes-in-flight", type=int, default=ssh.WRITES_IN_FLIGHT)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--xnat-mb", type=int, default=0)
    args = parser.parse_args()
    ssh.SFTP_MAX_REQUESTS = args.max_requests
    ssh.WRITES_IN_FLIGHT = args.writes_in_flight
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
        x2c_times, ssh_times = [], []
        with open_host(cfg) as host:
            for rep in range(args.repeat):  # interleaved, so load from elsewhere hits both
                dest = f"{remote}/{rep}"
                start = time.perf_counter()
                report = transfers.stage(
                    FileSource(Path(tmp)), [ref], host, dest, max_parallel=1, chunk_size=chunk
                )
                x2c_times.append(time.perf_counter() - start)
                assert report.copied == 1
                start = time.perf_counter()
                with open(src, "rb") as handle:
                    target = shlex.quote(f"{dest}/baseline.bin")
                    subprocess.run(
                        ["ssh", "-F", str(ssh_config), "x2c-test", f"cat > {target}"],
                        stdin=handle,
                        check=True,
                    )
                ssh_times.append(time.perf_counter() - start)
                start = time.perf_counter()
                again = transfers.stage(FileSource(Path(tmp)), [ref], host, dest, max_parallel=1)
                skip_s = time.perf_counter() - start
                assert again.skipped == 1
                host.runner.run(["rm", "-rf", "--", dest])
            if args.xnat_mb:
                from_xnat(host, ssh_config, remote, args.xnat_mb, args.repeat)
            host.runner.run(["rm", "-rf", "--", remote])
        rss_after = rss_mb()
    mb = size / 1e6
    x2c_best, ssh_best = min(x2c_times), min(ssh_times)
    x2c_med, ssh_med = statistics.median(x2c_times), statistics.median(ssh_times)
    print(
        f"file: {mb:.0f} MB, chunk {chunk >> 10} KiB, SFTP max_requests {args.max_requests}, "
        f"{args.writes_in_flight} chunk write(s) in flight, "
        f"{args.repeat} interleaved runs (best / median)"
    )
    print(f"x2c stage (SFTP, md5 verified): {mb / x2c_best:6.1f} / {mb / x2c_med:6.1f} MB/s")
    print(f"cat | ssh 'cat > f' baseline:   {mb / ssh_best:6.1f} / {mb / ssh_med:6.1f} MB/s")
    print(f"ratio x2c / baseline:           {ssh_best / x2c_best:6.2f} / {ssh_med / x2c_med:6.2f}")
    print(f"repeated stage (skipped after md5 on Y, one command): {skip_s:.2f} s")
    print(f"peak RSS of this process: {rss_before:.0f} MB before staging, {rss_after:.0f} MB after")


if __name__ == "__main__":
    main()
