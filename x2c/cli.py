"""``x2c devxnat``: the command that serves the XNAT-compatible development server.

The ``x2c`` console script lives in :mod:`cli.main` (it runs flows, so it sits in the top
layer) and mounts this command as its ``devxnat`` subcommand; ``python -m x2c.cli devxnat ...``
starts the server without importing anything above ``x2c`` (the demo and the test fixtures run
it that way, as a subprocess that starts in well under a second).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from x2c.errors import ConfigError, X2CError

log = logging.getLogger(__name__)


def read_password_file(path: str) -> str:
    """The password in ``path`` (first line, stripped); :class:`ConfigError` when unreadable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read --password-file {path}: {exc.strerror}") from exc
    password = text.strip()
    if not password:
        raise ConfigError(f"--password-file {path} is empty; write the password into it")
    return password


def run_devxnat(args: argparse.Namespace) -> int:
    """Serve until interrupted, as the parsed ``devxnat`` arguments say."""
    from x2c.devxnat.server import serve  # uvicorn and starlette only for this command

    password = read_password_file(args.password_file) if args.password_file else args.password
    serve(
        host=args.host,
        port=args.port,
        data=args.data,
        user=args.user,
        password=password,
        demo_data=args.demo_data,
    )
    return 0


def add_devxnat_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``devxnat`` subcommand to ``sub`` (its handler is ``args.func``)."""
    p = sub.add_parser(
        "devxnat",
        help="run the XNAT-compatible development server (foreground; Ctrl-C stops it)",
        description="Serve an XNAT-compatible REST API that unmodified pyxnat and xnatpy use. "
        "Everything lives under --data and survives restarts.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    p.add_argument("--data", required=True, help="directory holding the server's data")
    p.add_argument("--user", default="admin", help="the admin account's user name (admin)")
    p.add_argument(
        "--password",
        default="admin",
        help="the admin account's password (admin); prefer --password-file",
    )
    p.add_argument(
        "--password-file",
        default=None,
        help="read the password from this file (keeps it off the command line)",
    )
    p.add_argument(
        "--demo-data",
        type=int,
        default=0,
        metavar="N",
        help="create project DEMO with N subjects (one MR session each) if absent",
    )
    p.set_defaults(func=run_devxnat)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m x2c.cli`` (the ``devxnat`` command only)."""
    parser = argparse.ArgumentParser(prog="python -m x2c.cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_devxnat_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m x2c.cli devxnat ...``; returns the process exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        code: int = args.func(args)
    except X2CError as exc:
        print(f"x2c: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
