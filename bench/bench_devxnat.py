"""Memory and speed of x2c devxnat uploads and downloads, small file vs large file.

    python bench/bench_devxnat.py [--small-mb 8] [--large-mb 256]

Starts a real ``x2c devxnat`` on loopback, uploads a --small-mb and then a --large-mb random file
with a streamed PUT (as xnatpy does), downloads each back singly and as a resource zip, and
verifies the md5s. Prints the server's peak RSS after each size (VmHWM from /proc) and their
ratio (flat memory means a ratio near 1 while the file ratio is large), and the upload and
download MB/s against a plain local file copy of the same file measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def write_random(path: Path, mb: int) -> str:
    digest = hashlib.md5()
    with open(path, "wb") as out:
        for _ in range(mb):
            block = secrets.token_bytes(CHUNK)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            yield block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-mb", type=int, default=8)
    parser.add_argument("--large-mb", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-devxnat-") as tmp_name:
        tmp = Path(tmp_name)
        password = secrets.token_urlsafe(12)
        (tmp / "pw").write_text(password)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "x2c.cli", "devxnat", "--port", str(port),
                "--data", str(tmp / "data"), "--user", "admin",
                "--password-file", str(tmp / "pw"), "--demo-data", "1"]  # fmt: skip
        server = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(url + "/", timeout=2).ok:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("devxnat did not start")
                time.sleep(0.05)
            http = requests.Session()
            http.auth = ("admin", password)
            res = f"{url}/data/experiments/X2C_E00001/resources/BENCH"
            http.put(res).raise_for_status()
            results = {}
            for label, mb in (("small", args.small_mb), ("large", args.large_mb)):
                src = tmp / f"{label}.bin"
                md5 = write_random(src, mb)
                t0 = time.perf_counter()
                shutil.copyfile(src, tmp / f"{label}.copy")
                copy_s = time.perf_counter() - t0
                (tmp / f"{label}.copy").unlink()
                t0 = time.perf_counter()
                http.put(f"{res}/files/{label}.bin", data=chunks(src)).raise_for_status()
                up_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                got = hashlib.md5()
                with http.get(f"{res}/files/{label}.bin", stream=True) as resp:
                    resp.raise_for_status()
                    for block in resp.iter_content(CHUNK):
                        got.update(block)
                down_s = time.perf_counter() - t0
                assert got.hexdigest() == md5, "download digest mismatch"
                with http.get(f"{res}/files", params={"format": "zip"}, stream=True) as resp:
                    resp.raise_for_status()
                    zipped = sum(len(b) for b in resp.iter_content(CHUNK))
                assert zipped > mb * CHUNK, "zip shorter than its content"
                results[label] = (mb, peak_rss_mb(server.pid), copy_s, up_s, down_s)
                src.unlink()
            for label, (mb, rss, copy_s, up_s, down_s) in results.items():
                print(
                    f"{label}: {mb} MB  server peak RSS {rss:.0f} MB  "
                    f"local copy {mb / copy_s:.0f} MB/s  upload {mb / up_s:.0f} MB/s "
                    f"({copy_s / up_s:.2f}x copy)  download {mb / down_s:.0f} MB/s "
                    f"({copy_s / down_s:.2f}x copy)"
                )
            small, large = results["small"], results["large"]
            print(
                f"file size ratio {large[0] / small[0]:.0f}x, "
                f"server peak RSS ratio {large[1] / small[1]:.2f}x"
            )
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
