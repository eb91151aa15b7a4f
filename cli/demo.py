"""``x2c demo``: the whole loop on this machine. Starts ``x2c devxnat`` as a subprocess with a
few synthetic sessions, writes demo settings pointing at it, processes every session with the
demo pipeline through the real flows, and prints what happened and where the results are."""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import yaml

from cli.runs import Scope, prefect_session, run_passes
from cli.settings import VENV_BIN
from cli.table import report
from x2c.config import ContainerRuntime
from x2c.errors import ConfigError

DEMO_PROJECT = "DEMO"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def devxnat_server(data: Path, password: str, sessions: int) -> Iterator[str]:
    """Run ``x2c devxnat`` as a subprocess on a free loopback port with ``sessions`` demo
    sessions; yield its URL; stop it after. The password reaches it through a 0600 file."""
    pw_file = data.parent / "devxnat.password"
    pw_file.touch(mode=0o600)
    pw_file.write_text(password, encoding="utf-8")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "x2c.cli", "devxnat", "--host", "127.0.0.1", "--port", str(port),
        "--data", str(data), "--user", "admin", "--password-file", str(pw_file),
        "--demo-data", str(sessions),
    ]  # fmt: skip
    log_path = data.parent / "devxnat.log"
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise ConfigError(
                    f"x2c devxnat exited with {proc.returncode}; see its log {log_path}"
                )
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as resp:  # noqa: S310 (loopback)
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"x2c devxnat did not answer on {url} within 30 s; see {log_path}"
                )
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def demo_runtime(choice: str) -> ContainerRuntime:
    """``podman`` when asked, or (``auto``) when podman runs here and has the demo image."""
    if choice == "none":
        return "none"
    if choice == "podman":
        return "podman"
    if shutil.which("podman") is None:
        return "none"
    from x2c.containers import image_digest
    from x2c.hosts.local import LocalRunner
    from x2c.pipelines import builtin_pipeline

    image = builtin_pipeline("demo").image
    return "podman" if image_digest(LocalRunner(), "podman", image) is not None else "none"


def cmd_demo(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """``x2c demo``: devxnat with a few sessions, every one processed through the real flows
    on this machine, results uploaded with provenance, a table of what happened."""
    from x2c.settings import XnatSource, demo_settings

    started = time.monotonic()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="x2c-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    data = root / "xnat-data"
    password = secrets.token_urlsafe(16)
    runtime = demo_runtime(args.runtime)
    try:
        with devxnat_server(data, password, args.sessions) as url:
            print(
                f"x2c demo: XNAT-compatible server on {url} with {args.sessions} sessions in "
                f"project {DEMO_PROJECT} (user admin; data in {data})",
                file=out,
            )
            settings = demo_settings(
                xnat_url=url,
                xnat_user="admin",
                workdir=str(root / "work"),
                state_dir=root / "state",
                project=DEMO_PROJECT,
                runtime=runtime,
                path_prepend=(VENV_BIN,) if runtime == "none" else (),
            )
            cfg = root / "xnat.cfg"  # pyxnat's format; 0600, the password never in argv or env
            cfg.touch(mode=0o600)
            cfg.write_text(json.dumps({"server": url, "user": "admin", "password": password}))
            settings = settings.model_copy(update={"xnat": XnatSource(config=cfg)})
            path = root / "x2c.yaml"
            path.write_text(
                yaml.safe_dump(settings.model_dump(mode="json", exclude={"source"}), sort_keys=True)
            )
            how = (
                "in podman (localhost/x2c-demo:latest)"
                if runtime == "podman"
                else "bare, with this virtualenv's python"
            )
            print(
                f"x2c demo: the demo pipeline on this machine (local scheduler), {how}; "
                "Prefect's flow: x2c-reconcile passes until every session is done",
                file=out,
            )
            with prefect_session(quick=True, verbose=args.verbose, out=out):
                rows = run_passes(
                    str(path),
                    Scope(DEMO_PROJECT, "demo", "local"),
                    retry_failed=False,
                    detach=False,
                    out=out,
                    intervals=(0.5, 2.0),
                )
            print("", file=out)
            code = report(rows, out)
            if any(r.state != "done" for r in rows):
                code = 1
            print(
                f"\nresults on XNAT: {url}/data/projects/{DEMO_PROJECT}/experiments; each "
                "session's resource DEMO_STATS holds mask.nii.gz, stats.json, provenance.json",
                file=out,
            )
            print(f"x2c demo: {time.monotonic() - started:.1f} s in all", file=out)
            if not args.serve:
                print("x2c demo: the server stops now; `x2c demo --serve` keeps it up", file=out)
            else:
                print(
                    f"x2c demo: serving {url} until Ctrl-C (user admin, password in "
                    f"{data.parent / 'devxnat.password'})",
                    file=out,
                    flush=True,
                )
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
            return code
    finally:
        if not args.dir and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        elif args.keep:
            print(f"x2c demo: kept {root}", file=out)
