"""Reading many jobs' exit markers and log tails on a host in ONE runner call.

The job script writes its exit code into the marker from an EXIT trap. The probe is a fixed POSIX
``sh`` program; paths reach it as positional arguments, never inside the program text, so nothing
is interpolated into shell code (a remote runner quotes each argv element).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from x2c.errors import SchedulerOutputError

# $1 boundary, $2 tail lines, then (marker, log) pairs; an empty log means "no tail wanted".
_PROBE = r"""b=$1; n=$2; shift 2
while [ $# -ge 2 ]; do
  m=$1; l=$2; shift 2
  if [ -f "$m" ]; then c=$(head -c 64 -- "$m" | tr -cd '0-9-'); printf '%s M:%s\n' "$b" "$c"
  else printf '%s M?\n' "$b"; fi
  if [ -n "$l" ] && [ -f "$l" ]; then tail -n "$n" -- "$l" 2>/dev/null; fi
  printf '\n'
done
printf '%s END\n' "$b"
"""


@dataclass(frozen=True)
class Probe:
    """One job's marker and log tail. ``written`` is False while the marker does not exist;
    ``exit_code`` is None when it exists but holds no number yet (written but not flushed)."""

    written: bool
    exit_code: int | None
    log_tail: str


def probe_argv(pairs: Sequence[tuple[str, str]], lines: int, boundary: str) -> list[str]:
    """argv reading each ``(marker, log)`` pair; ``log`` may be empty to skip its tail."""
    argv = ["sh", "-c", _PROBE, "x2c-probe", boundary, str(lines)]
    for marker, log in pairs:
        argv += [marker, log]
    return argv


def new_boundary() -> str:
    """A line prefix that no log can contain by chance."""
    return f"--x2c-{secrets.token_hex(8)}--"


def parse_probe(text: str, boundary: str, count: int) -> list[Probe]:
    """The probe's output as one :class:`Probe` per pair, in order."""
    chunks = text.split(boundary + " ")
    if len(chunks) != count + 2 or chunks[-1].strip() != "END":
        raise SchedulerOutputError(
            f"marker probe returned {len(chunks) - 2} of {count} records", output=text
        )
    out = []
    for chunk in chunks[1:-1]:
        head, _, body = chunk.partition("\n")
        tail = body.rstrip("\n")
        if head.startswith("M:"):
            match = re.fullmatch(r"-?\d{1,9}", head[2:])
            code = int(match.group()) if match else None
            out.append(Probe(True, code, tail))
        elif head == "M?":
            out.append(Probe(False, None, tail))
        else:
            raise SchedulerOutputError(f"unexpected marker probe record {head!r}", output=text)
    return out
