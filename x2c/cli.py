"""The ``x2c`` command line.

The seed recipe's form keeps working::

    x2c --config xnat.cfg --experiment EXP --host HOST --output DIR [--dry-run]

and subcommands carry the rest (``x2c devxnat ...``). Every error reaching here is one line on
stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from x2c.errors import ConfigError, X2CError

log = logging.getLogger(__name__)


def _devxnat(args: argparse.Namespace) -> int:
    from pathlib import Path

    from x2c.devxnat.server import serve

    password = args.password
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read --password-file {args.password_file}: {exc.strerror}"
            ) from exc
    serve(
        host=args.host,
        port=args.port,
        data=args.data,
        user=args.user,
        password=password,
        demo_data=args.demo_data,
    )
    return 0


def _add_devxnat(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "devxnat",
        help="run the XNAT-compatible development server (foreground; Ctrl-C stops it)",
        description="Serve an XNAT-compatible REST API that unmodified pyxnat and xnatpy use.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on")
    p.add_argument("--data", required=True, help="directory holding the server's data")
    p.add_argument("--user", default="admin", help="the account's user name")
    p.add_argument("--password", default="admin", help="the account's password")
    p.add_argument(
        "--password-file",
        default=None,
        help="read the password from this file instead (keeps it off the command line)",
    )
    p.add_argument(
        "--demo-data",
        type=int,
        default=0,
        metavar="N",
        help="create a demo project with N subjects (one MR session each) if absent",
    )
    p.set_defaults(func=_devxnat)


SUBCOMMANDS: dict[str, Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = {
    "devxnat": _add_devxnat,
}


def build_parser() -> argparse.ArgumentParser:
    """The subcommand parser (``x2c devxnat`` ...)."""
    parser = argparse.ArgumentParser(prog="x2c", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``x2c`` console script; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = build_parser()
    args = parser.parse_args(args_list)
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
