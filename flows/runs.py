"""Running flows from the command line: :func:`prefect_session` imports Prefect (only the
commands that run flows pay for it) and prints a line per experiment as its flow run finishes;
:func:`run_batches` calls ``process_experiments`` in this process and turns its results into
table rows."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from flows.table import Row, cli_words, duration


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
        state = cli_words(state)
        if len(state) > 160:  # the table at the end has the whole reason
            state = state[:157] + "..."
        name = getattr(record, "flow_run_name", "?")
        print(f"  [{self.finished}] {name}: {state}", file=self.out, flush=True)


class _WithoutTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, without its traceback: when a run fails, Prefect's
    console line names the exception and the table at the end gives the reason, so the
    traceback is noise unless ``--verbose`` asks for it."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(record.__dict__)  # the other handlers keep the traceback
        bare.exc_info, bare.exc_text, bare.stack_info = None, None, None
        return self.inner.format(bare)


@contextmanager
def prefect_session(*, quick: bool, verbose: bool, out: TextIO) -> Iterator[None]:
    """Import Prefect and run the block with per-experiment progress lines on ``out``; Prefect's
    own console output only at warning level and without tracebacks unless ``verbose``.
    ``quick`` turns the flow-run heartbeat off (each run then ends ~1 s sooner; crash
    detection by heartbeat is lost, which a short interactive run does not need)."""
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
            if not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter))
    flow_logger.addHandler(progress)
    try:
        with temporary_settings(updates=updates):
            yield
    finally:
        flow_logger.removeHandler(progress)
        # Prefect's console handlers stay quiet: its temporary server stops at exit and says so


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
                        duration=duration(r.duration_s),
                        where=r.xnat_uri,
                        reason=cli_words(r.reason),
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
