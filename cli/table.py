"""What the ``x2c`` commands print: one :class:`Row` per experiment, laid out as a plain-text
table, with the failures' reasons and log tails after it (``run``, ``demo``, the seed form and
``status`` share it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO


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


def failures(rows: Sequence[Row], tail_lines: int = 8) -> str:
    parts = []
    for r in rows:
        if r.state != "failed":
            continue
        parts.append(f"{r.experiment}: {r.reason}")
        tail = r.log_tail.rstrip().splitlines()[-tail_lines:]
        parts += [f"    | {line}" for line in tail]
    return "\n".join(parts)


def cli_words(reason: str) -> str:
    """A reason in the command line's words (the flows' parameter is the CLI's option)."""
    return reason.replace("retry_failed=True", "--retry-failed")


def duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds else ""


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
        print("\nfailed:\n" + failures(failed), file=out)
    return 1 if failed else 0
