"""What one experiment's run came to, and the artifacts that show it in the Prefect UI.

Artifacts carry names, states, job ids, reasons, log tails and XNAT locations only: never a
parameter value that could be a secret (there is none: flows take the settings file's path).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

DONE = "done"
SKIPPED = "skipped"
FAILED = "failed"

_TAIL_LINES = 20
_TABLE_REASON_CHARS = (
    120  # the UI's table does not wrap: a longer reason hides the columns after it
)

# Characters that markdown would read as markup in free text (reasons, labels): ``<frozen runpy>``
# would vanish as an HTML tag, ``*.nii`` start emphasis. Underscores only count at a word's edge,
# so ``S001_MR1`` stays as it is.
_MARKUP = re.compile(r"[\\`*\[\]<>#|]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


@dataclass(frozen=True)
class ExperimentResult:
    """One experiment's outcome: small and serialisable (it is the flow run's result).

    ``state`` is ``done`` (result verified on XNAT: made now or found there), ``skipped``
    (nothing to process) or ``failed``; ``action`` is what reconcile decided (``skip_done``,
    ``attach``, ``collect``, ``submit``, or ``report_failed`` for a failure reported again);
    ``in_flight`` the wall-clock seconds (epoch) between
    taking and giving back the host's in-flight slot, when one was taken.
    """

    project: str
    experiment: str
    label: str
    pipeline: str
    host: str
    state: str
    action: str = ""
    job_id: str = ""
    duration_s: float = 0.0
    reason: str = ""
    xnat_uri: str = ""
    log_tail: str = ""
    in_flight: tuple[float, float] | None = None

    @property
    def failed(self) -> bool:
        """True when the experiment failed."""
        return self.state == FAILED


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase letters, digits, dashes) from ``parts``."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())).strip("-")


def _short(text: str, limit: int = _TABLE_REASON_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "\u2026"


def _row(r: ExperimentResult) -> dict[str, str]:
    return {
        "experiment": f"{r.project}/{r.label}",
        "state": r.state,
        "action": r.action,
        "job id": r.job_id,
        "host": r.host,
        "duration (s)": f"{r.duration_s:.1f}",
        "reason": _short(r.reason),
        "XNAT result": r.xnat_uri,
    }


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


def summary_markdown(title: str, results: Sequence[ExperimentResult]) -> str:
    """A markdown summary: counts, then every failure with its reason and log tail."""
    counts = {s: sum(r.state == s for r in results) for s in (DONE, SKIPPED, FAILED)}
    lines = [
        f"# {md_text(title)}",
        "",
        f"{len(results)} experiment(s): {counts[DONE]} done, {counts[SKIPPED]} skipped, "
        f"{counts[FAILED]} failed.",
    ]
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


def publish_results(key: str, title: str, results: Sequence[ExperimentResult]) -> None:
    """The table of every experiment (keyed ``key``; reasons cut to one short line) and the
    markdown summary (``key-summary``: whole reasons, log tails)."""
    create_table_artifact(
        key=key,
        table=[_row(r) for r in results],
        description=f"{title}: every experiment (whole reasons and log tails: {key}-summary)",
    )
    create_markdown_artifact(
        key=f"{key}-summary", markdown=summary_markdown(title, results), description=title
    )


def start_progress(total: int, what: str) -> UUID:
    """A progress artifact at 0 %, for a fan-out over ``total`` experiments."""
    artifact_id: UUID = create_progress_artifact(  # type: ignore[assignment]  # sync call
        progress=0.0, description=f"{what}: 0 of {total} finished"
    )
    return artifact_id


def report_progress(artifact_id: UUID, finished: int, total: int, what: str) -> None:
    """Move the progress artifact to ``finished`` of ``total``."""
    percent = 100.0 * finished / total if total else 100.0
    update_progress_artifact(
        artifact_id=artifact_id,
        progress=percent,
        description=f"{what}: {finished} of {total} finished",
    )


def as_dicts(results: Sequence[ExperimentResult]) -> list[dict[str, object]]:
    """Plain dicts, e.g. for JSON output."""
    return [asdict(r) for r in results]
