"""The seam between x2c and a compute host: a :class:`Runner` runs one argv and returns what
happened. Schedulers and job handling only ever talk to a Runner, never to SSH or subprocess."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completed:
    """What one command did: its argv, exit code and decoded output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Runs a command on a host. ``argv`` is never joined into a shell string by the caller;
    a remote runner quotes every element with :func:`shlex.quote`."""

    @property
    def name(self) -> str:
        """The host's name for messages and logs."""
        ...

    def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        """Run ``argv`` to completion and return its outcome; raises only when it could not run."""
        ...
