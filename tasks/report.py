"""The artifacts that show a pass in the Prefect UI: a table of every experiment (state, job
id, host, since, reason), a markdown summary with the counts and every failure's reason and log
tail, and per experiment one keyed artifact whose versions are its history.

Artifacts carry names, states, job ids, reasons, log tails and XNAT locations only: never a
parameter value that could be a secret (there is none: flows take the settings file's path).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from x2c.hooks import event_of
from x2c.reconcile import DONE, FAILED, IN_FLIGHT, PENDING, SKIPPED, Row

STATES = (DONE, IN_FLIGHT, PENDING, SKIPPED, FAILED)

_TAIL_LINES = 20
_TABLE_REASON_CHARS = (
    120  # the UI's table does not wrap: a longer reason hides the columns after it
)

# Characters that markdown would read as markup in free text (reasons, labels): ``<frozen runpy>``
# would vanish as an HTML tag, ``*.nii`` start emphasis. Underscores only count at a word's edge,
# so ``S001_MR1`` stays as it is.
_MARKUP = re.compile(r"[\\`*\[\]<>#|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from ``parts``."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())).strip("-")


def _short(text: str, limit: int = _TABLE_REASON_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "\u2026"


_row_keys = ("experiment", "state", "action", "job id", "host", "since", "reason", "XNAT result")


def _row(r: Row) -> dict[str, str]:
    return {
        "experiment": f"{r.project}/{r.label}",
        "state": r.state,
        "action": r.action,
        "job id": r.job_id,
        "host": r.host,
        "since": r.since,
        "reason": _short(r.reason),
        "XNAT result": r.xnat_uri,
    }


def counts(rows: Sequence[Row]) -> str:
    """``3 done, 1 in flight, 0 pending, 0 skipped, 1 failed``."""
    return ", ".join(f"{sum(r.state == s for r in rows)} {s}" for s in STATES)


def tail(text: str, lines: int = _TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def md_text(text: str) -> str:
    """``text`` escaped so that markdown shows it as written, on one line."""
    return _MARKUP.sub(lambda m: "\\" + m.group(0), " ".join(text.split()))


def code_block(text: str) -> list[str]:
    """``text`` as a fenced code block, fenced with more backticks than it holds in a row."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def _link(uri: str) -> str:
    """``uri`` as a markdown autolink (when it can be one), else as plain text."""
    return f"<{uri}>" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>]*", uri) else md_text(uri)


def summary_markdown(title: str, results: Sequence[Row]) -> str:
    """A markdown summary: counts, then every failure with its reason and log tail."""
    lines = [f"# {md_text(title)}", "", f"{len(results)} experiment(s): {counts(results)}."]
    failed = [r for r in results if r.failed]
    if failed:
        lines += ["", "## Failed", ""]
        for r in failed:
            job = f" (job {r.job_id} on {r.host})" if r.job_id else f" (on {r.host})"
            heading = md_text(f"{r.project}/{r.label}{job}")
            lines += [f"### {heading}", "", md_text(r.reason) or "no reason given", ""]
            if r.log_tail:
                lines += [*code_block(tail(r.log_tail)), ""]
    skipped = [r for r in results if r.state == SKIPPED]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- {md_text(f'{r.project}/{r.label}: {r.reason}')}" for r in skipped]
    done = [r for r in results if r.state == DONE and r.xnat_uri]
    if done:
        lines += ["", "## Results on XNAT", ""]
        lines += [f"- {md_text(f'{r.project}/{r.label}')}: {_link(r.xnat_uri)}" for r in done]
    return "\n".join(lines) + "\n"


def publish_results(key: str, title: str, results: Sequence[Row]) -> None:
    """The table of every experiment (keyed ``key``; reasons cut to one short line) and the
    markdown summary (``key-summary``: counts, whole reasons, log tails)."""
    create_table_artifact(
        key=key,
        table=[_row(r) for r in results] or [dict.fromkeys(_row_keys, "")],
        description=f"{title}: {counts(results)} (whole reasons and log tails: {key}-summary)",
    )
    create_markdown_artifact(
        key=f"{key}-summary", markdown=summary_markdown(title, results), description=title
    )


def history_key(r: Row) -> str:
    """The artifact key whose versions are one experiment's history."""
    return artifact_key("x2c", r.project, r.label, r.pipeline)


def _history(r: Row) -> None:
    job = f", job {r.job_id} on {r.host}" if r.job_id else f", on {r.host}"
    text = [f"**{md_text(r.state)}** ({md_text(r.action)}{md_text(job)}): {md_text(r.reason)}"]
    if r.xnat_uri:
        text.append(f"result: {_link(r.xnat_uri)}")
    if r.log_tail:
        text += ["", *code_block(tail(r.log_tail))]
    create_markdown_artifact(
        key=history_key(r),
        markdown="\n".join(text) + "\n",
        description=f"{r.pipeline} for {r.project}/{r.label}: one version per ending",
    )


def publish_history(rows: Sequence[Row], workers: int = 8) -> int:
    """A new version of each experiment's history artifact when this pass ended it (its
    result uploaded, its job found failed: the rows that fire hooks); a submission or a pass
    that only looked costs nothing (one API call each: half of what a version per submission
    too would cost; the pass's table shows what is in flight).
    Written from ``workers`` threads (one API call each; they carry the run's context so the
    artifacts belong to it). Returns how many were written."""
    changed = [r for r in rows if event_of(r.state, r.action) is not None]
    if not changed:
        return 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = [pool.submit(contextvars.copy_context().run, _history, r) for r in changed]
        for future in done:
            future.result()
    return len(changed)
