"""Running commands on this machine: the Runner for the local host (Y = Z)."""

from __future__ import annotations

import logging
import subprocess

from x2c.errors import RemoteCommandError
from x2c.hosts.base import Completed

log = logging.getLogger(__name__)


class LocalRunner:
    """Runs argv lists with :mod:`subprocess`, never through a shell."""

    name = "local"

    def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        """Run ``argv`` and return its outcome; a missing program is a RemoteCommandError."""
        log.debug("local run: %s", argv)
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
        except FileNotFoundError as exc:
            raise RemoteCommandError(
                f"{argv[0]!r} is not installed or not on PATH on the local host",
                host=self.name,
                argv=argv,
                returncode=None,
                stderr=str(exc),
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise RemoteCommandError(
                f"{argv[0]!r} did not finish within {timeout} s on the local host",
                host=self.name,
                argv=argv,
                returncode=None,
                stderr="timeout",
            ) from exc
        return Completed(
            argv=tuple(argv),
            returncode=proc.returncode,
            stdout=proc.stdout.decode(errors="replace"),
            stderr=proc.stderr.decode(errors="replace"),
        )
