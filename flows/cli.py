"""The ``x2c`` command line. It starts flows, so it sits in the top layer (``flows/``), above
``tasks/`` and ``x2c/``; it is also the edge where the environment is read (``os.environ`` is
passed down as a mapping) and where errors become one line on stderr.

The seed recipe's form::

    x2c --config XNAT.cfg --experiment EXP --host HOST --output DIR [--pipeline P] [--dry-run]

runs one experiment (accession ID, or label with ``--project``) with ``--pipeline`` (default
``freesurfer6-hippocampal``) on ``HOST`` (``local``, an ``~/.ssh/config`` alias, or a host of
``--settings``) in the work directory ``DIR`` there. ``--dry-run`` prints every request,
transfer and command it would make, and the job script, and changes nothing. Subcommands carry
the rest::

    x2c run     [--settings x2c.yaml] [PROJECT [EXPERIMENT ...]]   # a project, or a list
    x2c status  [--settings x2c.yaml] [PROJECT [EXPERIMENT ...]]   # done / in flight / failed
    x2c demo                                                       # the whole loop, locally
    x2c devxnat --data DIR --password-file FILE [--demo-data N]    # the XNAT-compatible server

Prefect is imported only by the commands that run flows (``run``, ``demo``, the seed form), so
``x2c --help``, ``x2c status`` and ``x2c devxnat`` start fast. The XNAT password comes from the
pyxnat ``.cfg``, ``~/.netrc``, ``XNAT_PASS`` or a Prefect Secret block, never from the command
line, and is never printed. Exit codes: 0 when every experiment is done (or had nothing to
process), 1 when any failed or on an error, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from x2c.cli import add_devxnat_parser
from x2c.config import ContainerRuntime, XnatConfig
from x2c.errors import ConfigError, JobFailedError, X2CError

log = logging.getLogger(__name__)

SEED_PIPELINE = "freesurfer6-hippocampal"
DEMO_PROJECT = "DEMO"
_SCHEDULERS = ("local", "slurm", "sge", "pbs", "lsf")
_RUNTIMES = ("apptainer", "singularity", "docker", "podman", "none")
_PIPELINE_SUFFIXES = (".yaml", ".yml", ".toml")
VENV_BIN = str(Path(sys.executable).parent)


# --- what the commands print ----------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One experiment's line in a table: what ``run``, ``demo`` and ``status`` print."""

    experiment: str
    state: str
    job_id: str = ""
    duration: str = ""
    where: str = ""
    reason: str = ""
    log_tail: str = ""


def format_table(rows: Sequence[Row], *, columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` with the named ``columns`` (fields of :class:`Row`)."""
    headers = {
        "experiment": "EXPERIMENT",
        "state": "STATE",
        "job_id": "JOB",
        "duration": "TIME",
        "where": "XNAT RESULT",
        "reason": "REASON",
    }
    cells = [[headers[c] for c in columns]] + [[str(getattr(r, c)) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    out = []
    for line in cells:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(out)


def _failures(rows: Sequence[Row], tail_lines: int = 8) -> str:
    parts = []
    for r in rows:
        if r.state != "failed":
            continue
        parts.append(f"{r.experiment}: {r.reason}")
        tail = r.log_tail.rstrip().splitlines()[-tail_lines:]
        parts += [f"    | {line}" for line in tail]
    return "\n".join(parts)


# --- settings from the command line ----------------------------------------------------------


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def _load(path: str, env: Mapping[str, str]) -> Any:
    from x2c.settings import load_settings

    return load_settings(path, env=env)


def _pipeline_ref(pipeline: str) -> tuple[str, str]:
    """(name, reference for ``pipelines:``) of a shipped pipeline name or a pipeline file."""
    if pipeline.endswith(_PIPELINE_SUFFIXES):
        from x2c.pipelines import load_pipeline

        path = str(Path(pipeline).resolve())
        return load_pipeline(path).name, path
    return pipeline, pipeline


def seed_settings(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Any, str]:
    """The settings the seed form describes, and the pipeline's name: ``--settings`` (if given)
    with ``--config``, ``--host``/``--output``, ``--scheduler``, ``--container-runtime`` and
    ``--keep`` laid over it."""
    from x2c.settings import Settings, XnatSource

    base: dict[str, Any] = {}
    if args.settings:
        loaded = _load(args.settings, env)
        base = loaded.model_dump(mode="json", exclude={"source"})
    if args.config:
        cfg = Path(args.config).expanduser()
        if not cfg.is_file():
            raise ConfigError(f"--config {args.config}: no such file (a pyxnat .cfg, JSON)")
        base["xnat"] = XnatSource(config=cfg.resolve()).model_dump(mode="json")
    if "xnat" not in base:
        raise ConfigError("say where XNAT is: --config XNAT.cfg (pyxnat) or --settings x2c.yaml")
    hosts: dict[str, Any] = dict(base.get("hosts", {}))
    host = dict(hosts.get(args.host, {}))
    if not host:
        if not args.output:
            raise ConfigError(f"--host {args.host} is not in the settings: give --output DIR")
        local = args.host == "local"
        host = {
            "name": args.host,
            "ssh": None if local else args.host,
            "scheduler": {"kind": "local" if local else "slurm"},
            "container_runtime": "none" if local else "apptainer",
            # bare jobs on this machine use this virtualenv's python (numpy, nibabel, x2c)
            "path_prepend": [VENV_BIN] if local else [],
        }
    if args.output:
        host["workdir"] = args.output if args.host != "local" else str(Path(args.output).resolve())
    if args.scheduler:
        host["scheduler"] = {**host.get("scheduler", {}), "kind": args.scheduler}
    if args.container_runtime:
        host["container_runtime"] = args.container_runtime
    for key in ("ssh_config", "known_hosts"):
        value = getattr(args, key)
        if value:
            host[key] = str(Path(value).expanduser().resolve())
    hosts[args.host] = host
    base["hosts"] = hosts
    name, ref = _pipeline_ref(args.pipeline)
    listed = list(base.get("pipelines", []))
    if listed and ref not in listed:
        listed.append(ref)
    base["pipelines"] = listed
    if args.keep:
        base["keep_workdir"] = True
    base.setdefault("state_dir", str(_home(env) / ".x2c" / "state"))
    try:
        return Settings.model_validate({**base, "source": "<command line>"}), name
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()
        raise ConfigError(
            f"the command line's settings are not valid: {' '.join(first[:3])}"
        ) from exc


def write_settings(settings: Any, env: Mapping[str, str]) -> str:
    """Write ``settings`` to a file the flows can load (they take a settings PATH) and return
    it. Content-addressed under ``~/.x2c/settings/``; holds no password (only where it is)."""
    text = yaml.safe_dump(settings.model_dump(mode="json", exclude={"source"}), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = _home(env) / ".x2c" / "settings"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.yaml"
    if not path.exists():
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text("# written by x2c from its command line\n" + text, encoding="utf-8")
        tmp.replace(path)
    _load(str(path), env)  # what the flows will read must validate
    return str(path)


def xnat_config_of(settings: Any, env: Mapping[str, str]) -> XnatConfig:
    """The :class:`XnatConfig` the settings point at, password resolved here at the edge."""
    from x2c.settings import xnat_config

    password = None
    if settings.xnat.secret_block is not None:
        from tasks.runtime import secret_password  # a Prefect Secret block: Prefect needed

        password = secret_password(settings)
    return xnat_config(settings, env=env, password=password)


# --- running flows ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One ``process_experiments`` call: a project with one pipeline on one host."""

    project: str
    pipeline: str
    host: str
    experiments: tuple[str, ...] | None = None


class _Progress(logging.Handler):
    """Prints one line per experiment flow run as it finishes (Prefect's own log record)."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(level=logging.INFO)
        self.out = out
        self.finished = 0

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "flow_name", "") != "process-experiment":
            return
        message = record.getMessage()
        if not message.startswith("Finished in state "):
            return
        self.finished += 1
        state = message.removeprefix("Finished in state ").removesuffix("()")
        state = _cli_words(state)
        if len(state) > 160:  # the table at the end has the whole reason
            state = state[:157] + "..."
        name = getattr(record, "flow_run_name", "?")
        print(f"  [{self.finished}] {name}: {state}", file=self.out, flush=True)


@contextmanager
def prefect_session(*, quick: bool, verbose: bool, out: TextIO) -> Iterator[None]:
    """Import Prefect and run the block with per-experiment progress lines on ``out``; Prefect's
    own console output only at warning level unless ``verbose``. ``quick`` turns the flow-run
    heartbeat off (each run then ends ~1 s sooner; crash detection by heartbeat is lost, which
    a short interactive run does not need)."""
    import prefect.main  # noqa: F401  (configures Prefect's logging, once per process)
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )

    updates: dict[Any, Any] = {PREFECT_SERVER_ANALYTICS_ENABLED: False}
    if quick:
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    progress = _Progress(out)
    flow_logger = logging.getLogger("prefect.flow_runs")
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
    flow_logger.addHandler(progress)
    try:
        with temporary_settings(updates=updates):
            yield
    finally:
        flow_logger.removeHandler(progress)
        # Prefect's console handlers stay quiet: its temporary server stops at exit and says so


def _cli_words(reason: str) -> str:
    """A reason in the command line's words (the flows' parameter is the CLI's option)."""
    return reason.replace("retry_failed=True", "--retry-failed")


def _duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds else ""


def run_batches(settings_path: str, batches: Sequence[Batch], *, retry_failed: bool) -> list[Row]:
    """Run ``process_experiments`` for each batch (in this process) and return one row per
    experiment. Errors of a batch as a whole (e.g. an unknown project) become failed rows."""
    from flows.batch import process_experiments
    from x2c.recipe import close_runtimes

    rows: list[Row] = []
    try:
        for b in batches:
            state = process_experiments(
                settings_path=settings_path,
                project=b.project,
                pipeline=b.pipeline,
                host=b.host,
                experiments=list(b.experiments) if b.experiments is not None else None,
                retry_failed=retry_failed,
                return_state=True,
            )
            data = state.result(raise_on_failure=False)
            if isinstance(data, list):
                rows += [
                    Row(
                        experiment=f"{r.project}/{r.label}",
                        state=r.state,
                        job_id=r.job_id,
                        duration=_duration(r.duration_s),
                        where=r.xnat_uri,
                        reason=_cli_words(r.reason),
                        log_tail=r.log_tail,
                    )
                    for r in data
                ]
            else:  # the batch itself failed before any experiment ran
                why = f"{type(data).__name__}: {data}" if isinstance(data, BaseException) else ""
                rows.append(
                    Row(
                        f"{b.project} ({b.pipeline} on {b.host})",
                        "failed",
                        reason=why or str(state.message),
                    )
                )
    finally:
        close_runtimes()
    return rows


def report(rows: Sequence[Row], out: TextIO) -> int:
    """Print the table and the failures; the exit code (1 when any failed)."""
    if not rows:
        print("x2c: no experiments to process", file=out)
        return 0
    print(
        format_table(
            rows, columns=("experiment", "state", "job_id", "duration", "where", "reason")
        ),
        file=out,
    )
    failed = [r for r in rows if r.state == "failed"]
    counts = {s: sum(r.state == s for r in rows) for s in ("done", "skipped", "failed")}
    print(
        f"\n{len(rows)} experiment(s): {counts['done']} done, {counts['skipped']} skipped, "
        f"{counts['failed']} failed",
        file=out,
    )
    if failed:
        print("\nfailed:\n" + _failures(failed), file=out)
    return 1 if failed else 0


# --- the seed form ---------------------------------------------------------------------------


def _seed_target(rt: Any, args: argparse.Namespace, pipeline: str) -> Any:
    from x2c import recipe
    from x2c.xnat import get_experiment

    project = args.project or get_experiment(rt.xnat, args.experiment).project
    return recipe.targets(rt, project, pipeline, args.host, [args.experiment])[0]


def cmd_seed(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """The seed form: one experiment, or its dry run."""
    from x2c import recipe

    settings, pipeline = seed_settings(args, env)
    if args.dry_run:
        rt = recipe.Runtime(settings, xnat_config_of(settings, env))
        try:
            t = _seed_target(rt, args, pipeline)
            for line in recipe.plan(rt, t):
                print(line, file=out)
        finally:
            rt.close()
        return 0
    path = write_settings(settings, env)
    rt = recipe.Runtime(settings, xnat_config_of(settings, env))
    try:
        t = _seed_target(rt, args, pipeline)
    finally:
        rt.close()
    print(f"x2c: {pipeline} for {t.project}/{t.label} ({t.experiment}) on {t.host}", file=out)
    with prefect_session(quick=True, verbose=args.verbose, out=out):
        rows = run_batches(
            path,
            [Batch(t.project, pipeline, t.host, (t.experiment,))],
            retry_failed=args.retry_failed,
        )
    return report(rows, out)


# --- run and status --------------------------------------------------------------------------


def batches_of(settings: Any, args: argparse.Namespace) -> list[Batch]:
    """What ``run``/``status`` work on: the ``projects:`` entries of the settings (those of
    PROJECT, or every one), or PROJECT with ``--pipeline``/``--host`` when given."""
    experiments = tuple(args.experiments) or None
    if args.project and args.pipeline and args.host:
        return [Batch(args.project, args.pipeline, args.host, experiments)]
    runs = [r for r in settings.projects if args.project in (None, r.project)]
    runs = [r for r in runs if args.pipeline in (None, r.pipeline) and args.host in (None, r.host)]
    if not runs:
        what = f"project {args.project!r}" if args.project else "any project"
        raise ConfigError(
            f"{settings.source}: no projects entry for {what}; add one under projects:, or give "
            "PROJECT with --pipeline and --host"
        )
    if experiments and len({r.project for r in runs}) > 1:
        raise ConfigError("naming experiments needs PROJECT too")
    return [Batch(r.project, r.pipeline, r.host, experiments) for r in runs]


def cmd_run(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """``x2c run``: process a project, a list of its experiments, or every configured one."""
    settings = _load(args.settings, env)
    batches = batches_of(settings, args)
    for b in batches:
        what = f"{len(b.experiments)} experiment(s)" if b.experiments else "every experiment"
        print(f"x2c: {b.pipeline} on {b.host} for {what} of {b.project}", file=out)
    with prefect_session(quick=args.quick, verbose=args.verbose, out=out):
        rows = run_batches(
            str(Path(args.settings).expanduser().resolve()), batches, retry_failed=args.retry_failed
        )
    return report(rows, out)


def status_row(rt: Any, t: Any) -> Row:
    """Where one target stands, from reconcile (``recipe.decide``): done, in flight with its
    job id, finished but not uploaded, failed with its reason, or not started."""
    from x2c import recipe
    from x2c.recipe import Action

    name = f"{t.project}/{t.label}"
    try:
        d = recipe.decide(rt, t)
    except JobFailedError as exc:
        why = str(exc).removeprefix(f"{t.pipeline} for {name}: ")
        return Row(name, "failed", job_id=exc.job_id or "", reason=_cli_words(why))
    except X2CError as exc:
        return Row(name, "error", reason=str(exc))
    state = {
        Action.SKIP_DONE: "done",
        Action.ATTACH: "in flight",
        Action.COLLECT: "finished",
        Action.SUBMIT: "not started",
    }[d.action]
    return Row(name, state, job_id=str(d.job_id or ""), reason=d.reason)


def cmd_status(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """``x2c status``: a table of where every experiment stands; exit 1 when any failed."""
    from x2c import recipe

    settings = _load(args.settings, env)
    rt = recipe.Runtime(settings, xnat_config_of(settings, env))
    rows: list[Row] = []
    try:
        for b in batches_of(settings, args):
            targets = recipe.targets(rt, b.project, b.pipeline, b.host, b.experiments)
            with ThreadPoolExecutor(max_workers=8) as pool:
                rows += list(pool.map(lambda t: status_row(rt, t), targets))
    finally:
        rt.close()
    print(format_table(rows, columns=("experiment", "state", "job_id", "reason")), file=out)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    print("\n" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
    return 1 if any(r.state in ("failed", "error") for r in rows) else 0


# --- the demo --------------------------------------------------------------------------------


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
                "Prefect's flows: process-experiments -> one process-experiment per session",
                file=out,
            )
            with prefect_session(quick=True, verbose=args.verbose, out=out):
                rows = run_batches(
                    str(path), [Batch(DEMO_PROJECT, "demo", "local")], retry_failed=False
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


# --- the parser ------------------------------------------------------------------------------


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--settings", default="x2c.yaml", help="the x2c settings file (default: ./x2c.yaml)"
    )
    p.add_argument(
        "project", nargs="?", default=None, help="an XNAT project (default: every one in projects:)"
    )
    p.add_argument(
        "experiments", nargs="*", help="experiments of PROJECT (accession IDs or labels)"
    )
    p.add_argument("--pipeline", default=None, help="only this pipeline (or: run it for PROJECT)")
    p.add_argument("--host", default=None, help="only this host (or: run on it for PROJECT)")


def build_parser() -> argparse.ArgumentParser:
    """The ``x2c`` parser: the seed form's options and the subcommands."""
    parser = argparse.ArgumentParser(
        prog="x2c",
        description="Run neuroimaging pipelines for XNAT sessions on a cluster that cannot "
        "reach XNAT, orchestrated by Prefect.",
        epilog="seed form: x2c --config XNAT.cfg --experiment EXP --host HOST --output DIR "
        "[--pipeline P] [--dry-run]. Subcommands: x2c COMMAND --help.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Prefect's and x2c's logs"
    )
    seed = parser.add_argument_group("the seed form (one experiment)")
    seed.add_argument("--config", help="pyxnat .cfg file (JSON: server, user, password)")
    seed.add_argument(
        "--experiment", help="the experiment's accession ID (or label, with --project)"
    )
    seed.add_argument("--project", help="the experiment's project (looked up when not given)")
    seed.add_argument("--host", help="'local', an ~/.ssh/config alias, or a host of --settings")
    seed.add_argument("--output", help="work directory on HOST (the job directories go here)")
    seed.add_argument(
        "--pipeline",
        default=SEED_PIPELINE,
        help=f"shipped pipeline or a pipeline file ({SEED_PIPELINE})",
    )
    seed.add_argument(
        "--dry-run", action="store_true", help="print what it would do; change nothing"
    )
    seed.add_argument("--settings", help="an x2c settings file for everything else")
    seed.add_argument(
        "--scheduler", choices=_SCHEDULERS, help="HOST's scheduler (local: local; else slurm)"
    )
    seed.add_argument(
        "--container-runtime",
        choices=_RUNTIMES,
        help="HOST's container runtime (local: none; else apptainer)",
    )
    seed.add_argument("--ssh-config", help="ssh_config file for the alias (default ~/.ssh/config)")
    seed.add_argument("--known-hosts", help="known_hosts file (default: the ssh_config's)")
    seed.add_argument(
        "--keep", action="store_true", help="keep the work directory after the upload"
    )
    seed.add_argument(
        "--retry-failed", action="store_true", help="resubmit a job that failed before"
    )

    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="process a project, a list of its experiments, or every configured project",
        description="Process experiments through the process-experiments flow, under the "
        "per-host and XNAT limits; prints a line per experiment as it finishes, then a table.",
    )
    _add_selection(run)
    run.add_argument("--retry-failed", action="store_true", help="resubmit jobs that failed before")
    run.add_argument(
        "--quick", action="store_true", help="no flow-run heartbeat (faster; no crash detection)"
    )
    run.set_defaults(func=cmd_run)

    status = sub.add_parser(
        "status",
        help="where each experiment stands: done, in flight, failed (why), not started",
        description="Reconcile each experiment (read-mostly: XNAT's result, the job registry on "
        "the host, one scheduler poll) and print a table. Does not need Prefect.",
    )
    _add_selection(status)
    status.set_defaults(func=cmd_status)

    demo = sub.add_parser(
        "demo",
        help="the whole loop on this machine: a local XNAT, a few sessions, results uploaded",
        description="Start x2c devxnat with a few synthetic sessions, process every one with "
        "the demo pipeline on this machine through the real flows, upload the results with "
        "provenance, and print what happened. Exit 0 only when every session is done.",
    )
    demo.add_argument("--sessions", type=int, default=4, help="synthetic sessions (4)")
    demo.add_argument(
        "--runtime", choices=("auto", "podman", "none"), default="auto",
        help="podman with localhost/x2c-demo:latest, or bare (auto: podman when it works)",
    )  # fmt: skip
    demo.add_argument("--dir", help="keep everything in this directory (default: a temporary one)")
    demo.add_argument("--keep", action="store_true", help="keep the temporary directory")
    demo.add_argument("--serve", action="store_true", help="keep serving XNAT after, until Ctrl-C")
    demo.set_defaults(func=cmd_demo)

    add_devxnat_parser(sub)
    return parser


def _configure_logging(verbose: bool, *, prefect: bool) -> None:
    """x2c's own log lines at INFO when ``verbose``; Prefect's commands keep Prefect's console
    handler (configured by :func:`prefect_session`), the others get a plain one."""
    if verbose:
        logging.getLogger("x2c").setLevel(logging.INFO)
    if not prefect:
        logging.basicConfig(
            level=logging.INFO if verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    """Entry point of the ``x2c`` console script; returns the process exit code."""
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    func: Callable[[argparse.Namespace, Mapping[str, str], TextIO], int]
    if args.command == "devxnat":
        _configure_logging(True, prefect=False)
        func = lambda a, _env, _out: int(a.func(a))  # noqa: E731
    elif args.command is not None:
        _configure_logging(args.verbose, prefect=args.command in ("run", "demo"))
        func = args.func
    elif args.experiment or args.config:
        missing = [o for o in ("experiment", "host") if not getattr(args, o)]
        if missing:
            parser.error(f"the seed form needs {' and '.join('--' + m for m in missing)}")
        _configure_logging(args.verbose, prefect=not args.dry_run)
        func = cmd_seed
    else:
        parser.print_help(sys.stderr)
        return 2
    try:
        return func(args, os.environ, out)
    except X2CError as exc:
        print(f"x2c: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
