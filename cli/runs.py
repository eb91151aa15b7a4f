"""Running passes from the command line: :func:`prefect_session` imports Prefect (only the
commands that run flows pay for it); :func:`run_passes` runs ``reconcile`` passes in this
process until nothing in the scope is pending or in flight (or once, detached), printing a line
per experiment as it reaches its end, and turns the last rows into table rows."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from cli.table import Row, cli_words, duration
from x2c.errors import X2CError


@dataclass(frozen=True)
class Scope:
    """What a command runs passes over (the ``reconcile`` flow's parameters)."""

    project: str | None = None
    pipeline: str | None = None
    host: str | None = None
    experiments: tuple[str, ...] | None = None

    def parameters(self) -> dict[str, Any]:
        """The ``reconcile`` flow's parameters for this scope."""
        return {
            "project": self.project,
            "pipeline": self.pipeline,
            "host": self.host,
            "experiments": list(self.experiments) if self.experiments else None,
        }


class _WithoutTraceback(logging.Formatter):
    """Formats a record as ``inner`` does, without its traceback: the table at the end gives
    the reason, so the traceback is noise unless ``--verbose`` asks for it."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(record.__dict__)  # the other handlers keep the traceback
        bare.exc_info, bare.exc_text, bare.stack_info = None, None, None
        return self.inner.format(bare)


@contextmanager
def prefect_session(*, quick: bool, verbose: bool, out: TextIO) -> Iterator[None]:
    """Import Prefect and run the block with Prefect's own console output only at warning
    level and without tracebacks unless ``verbose``. ``quick`` turns the flow-run heartbeat
    off (each run then ends ~1 s sooner; crash detection by heartbeat is lost, which a short
    interactive run does not need)."""
    import prefect.main  # noqa: F401  (configures Prefect's logging, once per process)
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    # Prefect's temporary server (no PREFECT_API_URL) gets 20 s to start by default, which a
    # busy two-core machine can miss; waiting longer costs nothing when it is quick.
    updates: dict[Any, Any] = {
        PREFECT_SERVER_ANALYTICS_ENABLED: False,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: max(
            120, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        ),
    }
    if quick:
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
            if not isinstance(handler.formatter, _WithoutTraceback):
                handler.setFormatter(_WithoutTraceback(handler.formatter))
        logging.getLogger("prefect").setLevel(logging.WARNING)
    with temporary_settings(updates=updates):
        try:
            yield
        except RuntimeError as exc:  # Prefect's own start-up failures (its temporary server)
            if "Prefect" not in str(exc):
                raise
            raise PrefectUnavailableError(
                f"{exc} Set PREFECT_API_URL to a running Prefect server (see the README's "
                "Production section), or try again when the machine is less busy"
            ) from exc


def _age_s(since: str, now: datetime) -> float | None:
    try:
        return (now - datetime.fromisoformat(since)).total_seconds()
    except ValueError:
        return None


def next_interval(rows: Sequence[Any], floor: float, ceiling: float) -> float:
    """Seconds until the next pass: a tenth of the youngest job's age, within [``floor``,
    ``ceiling``] (a job that just started is looked at soon, one running for hours rarely);
    ``floor`` when an upload waits for the next pass to verify it."""
    if any(r.action == "verify" for r in rows):
        return floor
    now = datetime.now(UTC)
    ages = [a for r in rows if r.since and (a := _age_s(r.since, now)) is not None]
    if not ages:
        return floor
    return max(floor, min(ceiling, min(ages) / 10))


def _line(r: Any) -> str:
    text = cli_words(" ".join(r.reason.split()))
    if len(text) > 160:  # the table at the end has the whole reason
        text = text[:157] + "..."
    return f"{r.project}/{r.label}: {r.state} ({text})" if text else f"{r.project}/{r.label}"


def run_passes(
    settings_path: str,
    scope: Scope,
    *,
    retry_failed: bool,
    detach: bool,
    out: TextIO,
    intervals: tuple[float, float] = (2.0, 60.0),
) -> list[Row]:
    """Run passes until every experiment of ``scope`` is done, skipped or failed (``detach``:
    one pass) and return one table row per experiment. ``intervals`` bounds the wait between
    passes (the scope's hosts' ``poll_min_s``/``poll_max_s``)."""
    from flows.reconcile import reconcile
    from x2c.recipe import close_runtimes
    from x2c.reconcile import key_of

    started: dict[tuple[str, str, str], float] = {}
    ended: dict[tuple[str, str, str], float] = {}
    final: dict[tuple[str, str, str], Any] = {}  # each experiment's row of the pass that ended it
    others: set[tuple[str, str, str]] = set()  # experiments another run was seen handling
    rows: list[Any] = []
    try:
        first = True
        while True:
            state = reconcile(
                settings_path=settings_path,
                retry_failed=retry_failed and first,
                return_state=True,
                **scope.parameters(),
            )
            data = state.result(raise_on_failure=False)
            if not isinstance(data, list):  # the pass itself failed (an unknown project...)
                why = f"{type(data).__name__}: {data}" if isinstance(data, BaseException) else ""
                raise PassFailedError(cli_words(why or str(state.message)))
            rows = data
            now = time.monotonic()
            for r in rows:
                key = key_of(r)
                started.setdefault(key, now)
                if r.action == "wait" and r.reason.startswith("another run") and key not in others:
                    others.add(key)
                    print(f"  {r.project}/{r.label}: {r.reason}", file=out, flush=True)
                if r.final and key not in ended:
                    ended[key] = now
                    final[key] = r
                    print(f"  [{len(ended)}] {_line(r)}", file=out, flush=True)
            first = False
            if detach or all(r.final for r in rows):
                break
            time.sleep(next_interval([r for r in rows if not r.final], *intervals))
    finally:
        close_runtimes()
    if detach:
        _print_detached(rows, out)
    rows = [final.get(key_of(r), r) for r in rows]
    keys = [key_of(r) for r in rows]
    return [
        Row(
            experiment=f"{r.project}/{r.label}",
            state=r.state,
            job_id=r.job_id,
            duration=duration(ended.get(k, time.monotonic()) - started[k]) if r.final else "",
            where=r.xnat_uri,
            reason=cli_words(r.reason),
            log_tail=r.log_tail,
        )
        for r, k in zip(rows, keys, strict=True)
    ]


class PrefectUnavailableError(X2CError):
    """Prefect's API could not be reached or started (its message says what to do)."""


class PassFailedError(X2CError):
    """A pass could not run at all (its message says why, in one line)."""


def _print_detached(rows: Sequence[Any], out: TextIO) -> None:
    submitted = [r for r in rows if r.action == "submit" and r.job_id]
    waiting = [r for r in rows if not r.final]
    print(f"x2c: submitted {len(submitted)} job(s)", file=out)
    for r in submitted:
        print(f"  {r.project}/{r.label}: job {r.job_id} on {r.host}", file=out)
    if waiting:
        print(
            f"x2c: {len(waiting)} experiment(s) in flight or waiting for a place; follow them "
            "with `x2c status`, and collect them with `x2c run` or the reconcile deployment "
            "(every 5 minutes)",
            file=out,
        )
