"""The ``x2c`` command line. It runs flows, so it sits in the top layer (``cli/``), above
``flows/``, ``tasks/`` and ``x2c/``; it is also the edge where the environment is read
(``os.environ`` is passed down as a mapping) and where errors become one line on stderr.

The seed recipe's form::

    x2c --config XNAT.cfg --experiment EXP --host HOST --output DIR [--pipeline P] [--dry-run]

runs one experiment (accession ID, or label with ``--project``) with ``--pipeline`` (default
``freesurfer6-hippocampal``) on ``HOST`` (``local``, an ``~/.ssh/config`` alias, or a host of
``--settings``) in the work directory ``DIR`` there. ``--dry-run`` prints every request,
transfer and command it would make, and the job script, and changes nothing. Subcommands carry
the rest::

    x2c run     [--settings x2c.yaml] [--detach] [PROJECT [EXPERIMENT ...]]   # passes
    x2c status  [--settings x2c.yaml] [PROJECT [EXPERIMENT ...]]   # done / in flight / failed
    x2c demo                                                       # the whole loop, locally
    x2c devxnat --data DIR --password-file FILE [--demo-data N]    # the XNAT-compatible server

Prefect is imported only by the commands that run flows (``run``, ``demo``, the seed form), so
``x2c --help``, ``x2c status`` and ``x2c devxnat`` start fast. The XNAT password comes from the
pyxnat ``.cfg``, ``~/.netrc``, ``XNAT_PASS`` or a Prefect Secret block, never from the command
line, and is never printed. Exit codes: 0 when every experiment is done (or had nothing to
process), 1 when any failed or on an error, 2 on a usage error.

This module parses the arguments and dispatches; the rest lives beside it:
:mod:`cli.commands` (the seed form, ``run``, ``status``),
:mod:`cli.settings` (settings files, the seed form's settings, the XNAT password),
:mod:`cli.runs` (Prefect, progress lines, running ``reconcile`` passes),
:mod:`cli.table` (the table and the failures) and :mod:`cli.demo` (``x2c demo``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from cli.commands import cmd_run, cmd_seed, cmd_status
from cli.demo import cmd_demo
from x2c.cli import add_devxnat_parser
from x2c.errors import X2CError

SEED_PIPELINE = "freesurfer6-hippocampal"
_SCHEDULERS = ("local", "slurm", "sge", "pbs", "lsf")
_RUNTIMES = ("apptainer", "singularity", "docker", "podman", "none")
_USAGE = """x2c [-v] --config XNAT.cfg --experiment EXP --host HOST --output DIR [options]
       x2c [-v] COMMAND [options]    (COMMAND: run, status, demo, devxnat; x2c -h for all)"""


# --- the parser ------------------------------------------------------------------------------


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--settings",
        default="x2c.yaml",
        metavar="FILE",
        help="the x2c settings file (default: ./x2c.yaml)",
    )
    p.add_argument(
        "project",
        nargs="?",
        default=None,
        metavar="PROJECT",
        help="an XNAT project (default: every one under projects:)",
    )
    p.add_argument(
        "experiments",
        nargs="*",
        metavar="EXPERIMENT",
        help="experiments of PROJECT (accession IDs or labels; default: all)",
    )
    p.add_argument(
        "--pipeline",
        default=None,
        metavar="P",
        help="only the projects: entries with this pipeline (or, with PROJECT and --host: this "
        "pipeline, listed or not)",
    )
    p.add_argument(
        "--host",
        default=None,
        metavar="HOST",
        help="only the projects: entries on this host (or, with PROJECT and --pipeline: this "
        "host, listed or not)",
    )


def _positive(text: str) -> int:
    """An ``argparse`` type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``x2c`` parser: the seed form's options and the subcommands."""
    parser = argparse.ArgumentParser(
        prog="x2c",
        usage=_USAGE,
        description="Run neuroimaging pipelines for XNAT sessions on a cluster that cannot "
        "reach XNAT, orchestrated by Prefect.",
        epilog="seed form: x2c --config XNAT.cfg --experiment EXP --host HOST --output DIR "
        "[--pipeline P] [--dry-run]. Subcommands: x2c COMMAND --help.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Prefect's and x2c's logs"
    )
    seed = parser.add_argument_group("the seed form (one experiment)")
    seed.add_argument(
        "--config", metavar="XNAT.cfg", help="pyxnat .cfg file (JSON: server, user, password)"
    )
    seed.add_argument(
        "--experiment",
        metavar="EXP",
        help="the experiment's accession ID (or label, with --project)",
    )
    seed.add_argument("--project", help="the experiment's project (looked up when not given)")
    seed.add_argument("--host", help="'local', an ~/.ssh/config alias, or a host of --settings")
    seed.add_argument(
        "--output", metavar="DIR", help="work directory on HOST (the job directories go here)"
    )
    seed.add_argument(
        "--pipeline",
        default=SEED_PIPELINE,
        metavar="P",
        help=f"a shipped pipeline's name or a pipeline file (default: {SEED_PIPELINE})",
    )
    seed.add_argument(
        "--dry-run", action="store_true", help="print what it would do; change nothing"
    )
    seed.add_argument("--settings", metavar="FILE", help="an x2c settings file for everything else")
    seed.add_argument(
        "--scheduler", choices=_SCHEDULERS, help="HOST's scheduler (local: local; else slurm)"
    )
    seed.add_argument(
        "--container-runtime",
        choices=_RUNTIMES,
        help="HOST's container runtime (local: none; else apptainer)",
    )
    seed.add_argument(
        "--ssh-config", metavar="FILE", help="ssh_config file for the alias (default ~/.ssh/config)"
    )
    seed.add_argument(
        "--known-hosts", metavar="FILE", help="known_hosts file (default: the ssh_config's)"
    )
    seed.add_argument(
        "--keep", action="store_true", help="keep the work directory after the upload"
    )
    seed.add_argument(
        "--retry-failed", action="store_true", help="resubmit a job that failed before"
    )

    sub = parser.add_subparsers(dest="command", metavar="COMMAND", prog="x2c")
    run = sub.add_parser(
        "run",
        help="process a project, a list of its experiments, or every configured project",
        description="Run reconcile passes (the x2c-reconcile flow) until every experiment is "
        "done, skipped or failed: each pass collects the jobs that ended and submits new ones "
        "into the hosts' free places; prints a line per experiment as it ends, then a table.",
    )
    _add_selection(run)
    run.add_argument("--retry-failed", action="store_true", help="resubmit jobs that failed before")
    run.add_argument(
        "--detach",
        action="store_true",
        help="one pass: submit what fits, print it, and leave the jobs to later passes",
    )
    run.add_argument(
        "--quick", action="store_true", help="no flow-run heartbeat (faster; no crash detection)"
    )
    run.set_defaults(func=cmd_run)

    status = sub.add_parser(
        "status",
        help="where each experiment stands: done, in flight, failed (why), not started",
        description="Where each experiment stands, read only (XNAT's result, the claims and "
        "job registry on each host, one scheduler look per host), as a table. Does not need "
        "Prefect.",
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
    demo.add_argument(
        "--sessions", type=_positive, default=4, metavar="N", help="synthetic sessions (4)"
    )
    demo.add_argument(
        "--runtime", choices=("auto", "podman", "none"), default="auto",
        help="podman with localhost/x2c-demo:latest, or bare (auto: podman when it works)",
    )  # fmt: skip
    demo.add_argument(
        "--dir", metavar="DIR", help="keep everything in this directory (default: a temporary one)"
    )
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
        if args.experiment or args.config:
            parser.error(
                f"--experiment and --config belong to the seed form, not to x2c {args.command}: "
                "give one or the other"
            )
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
    stopped: list[int] = []

    def terminate(signum: int, _frame: object) -> None:
        # SIGTERM unwinds like Ctrl-C: Prefect's temporary server and the SSH connections are
        # closed on the way out instead of being left behind (the default handler exits at once)
        stopped.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return func(args, os.environ, out)
    except X2CError as exc:
        if stopped:  # a pass cut short by the signal reports it as its own failure
            return _stopped(stopped[0])
        print(f"x2c: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _stopped(stopped[0] if stopped else signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(signum: int) -> int:
    """Say in one line that the run was stopped, and what to do; the exit code 128+signal."""
    print(
        f"x2c: stopped by {signal.Signals(signum).name}; jobs already submitted keep running, "
        "and the next `x2c run` (or the reconcile deployment) picks them up",
        file=sys.stderr,
    )
    return 128 + signum


if __name__ == "__main__":
    raise SystemExit(main())
