"""The watcher's memory: a high-water mark over XNAT's ``insert_date``, kept in a Prefect Variable.

The mark says "every session inserted up to this time has been handed on". Only XNAT's own
timestamps are compared with each other, never with this machine's clock, so clock skew between
Z and X cannot hide a session. Two things make a plain "newer than the mark" test unsafe, and the
mark handles both:

- ties: several sessions can share the mark's timestamp, and one with that timestamp may become
  visible only after the mark was taken;
- late arrivals: a session can become visible with an ``insert_date`` a little OLDER than the mark
  (XNAT stamps it when the insert starts, the listing sees it when the transaction commits).

So the watcher looks back ``lookback_s`` before the mark and remembers which IDs in that window it
has already handed on (``seen``). The mark is saved only after the runs were started; a crash in
between replays those sessions, and the run launcher's idempotency key turns the replay into a
no-op. The mark is an optimisation (no call per old session); the key is the guarantee.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.variables import Variable

from tasks.common import run_logger
from x2c import xnat
from x2c.recipe import Runtime
from x2c.xnat import Experiment

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK_S = 3600.0
# Prefect Variables hold at most 5,000 characters of JSON; IDs are ~12 characters.
MAX_SEEN = 250


@dataclass(frozen=True)
class Mark:
    """The newest ``insert_date`` handed on, and the IDs handed on within the look-back window."""

    mark: str
    seen: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The Variable's value."""
        return {"mark": self.mark, "seen": list(self.seen)}

    @classmethod
    def from_json(cls, value: Any) -> Mark | None:
        """Read a Variable's value back; None when it holds no usable mark."""
        if not isinstance(value, dict) or not isinstance(value.get("mark"), str):
            return None
        seen = value.get("seen") or []
        return cls(mark=value["mark"], seen=tuple(str(s) for s in seen))


def parse_stamp(text: str) -> datetime | None:
    """XNAT's ``insert_date`` (``2026-11-27 05:20:01.123`` or ISO 8601) as a naive datetime."""
    try:
        stamp = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return stamp.replace(tzinfo=None)


def variable_name(server: str, project: str, pipeline: str) -> str:
    """The Variable holding the mark of one (XNAT server, project, pipeline) watch.

    The server (its public URL) is in the name, as in :func:`idempotency_key`: the watchers of
    two XNATs with a project of the same name on one Prefect server must not read each
    other's mark (one would take the other's newest session as its own and pass over older
    ones)."""
    digest = hashlib.sha256(server.encode()).hexdigest()[:10]
    slug = re.sub(r"[^a-z0-9_-]+", "-", f"{project}-{pipeline}".lower())
    return f"x2c-watch-{digest}-{slug}"


def new_sessions(
    experiments: Iterable[Experiment],
    mark: Mark | None,
    *,
    lookback_s: float = DEFAULT_LOOKBACK_S,
    backfill: bool = False,
) -> tuple[list[Experiment], Mark | None]:
    """Split one project listing into the sessions to hand on now and the mark to save after.

    With no mark yet, nothing is handed on unless ``backfill`` (the nightly reconcile covers what
    was there before the watcher started); the mark starts at the newest session. Sessions without
    a readable ``insert_date`` are left to the nightly reconcile and logged.
    """
    dated: list[tuple[datetime, Experiment]] = []
    for exp in experiments:
        stamp = parse_stamp(exp.insert_date)
        if stamp is None:
            log.warning(
                "session %s (%s) has no readable insert_date %r; the nightly run will see it",
                exp.label,
                exp.id,
                exp.insert_date,
            )
            continue
        dated.append((stamp, exp))
    if not dated:
        return [], mark
    window = timedelta(seconds=lookback_s)
    old = parse_stamp(mark.mark) if mark is not None else None
    if old is None:
        fresh = [exp for _, exp in sorted(dated, key=_order)] if backfill else []
    else:
        seen = set(mark.seen) if mark is not None else set()
        floor = old - window
        fresh = [exp for stamp, exp in sorted(dated, key=_order) if stamp >= floor]
        fresh = [exp for exp in fresh if exp.id not in seen]
    newest = max(stamp for stamp, _ in dated)
    if old is not None and old > newest:
        newest = old  # a session was deleted; the mark never moves back
    keep = sorted(
        ((stamp, exp) for stamp, exp in dated if stamp >= newest - window),
        key=_order,
        reverse=True,
    )
    ids = [exp.id for _, exp in keep]
    text = _stamp_text(newest, dated, mark)
    return fresh, Mark(mark=text, seen=tuple(ids[:MAX_SEEN]))


def _order(item: tuple[datetime, Experiment]) -> tuple[datetime, str]:
    return item[0], item[1].id


def _stamp_text(
    newest: datetime, dated: Sequence[tuple[datetime, Experiment]], mark: Mark | None
) -> str:
    for stamp, exp in dated:
        if stamp == newest:
            return exp.insert_date
    return mark.mark if mark is not None else newest.isoformat(sep=" ")


def load_mark(name: str) -> Mark | None:
    """The saved mark, or None before the first watch."""
    return Mark.from_json(Variable.get(name, default=None))


def save_mark(name: str, mark: Mark) -> None:
    """Save the mark (overwriting the previous one)."""
    Variable.set(name, mark.to_json(), tags=["x2c", "watcher"], overwrite=True)


@task(
    name="list-sessions",
    task_run_name="list-sessions-{project}",
    cache_policy=NO_CACHE,
)
def list_sessions(rt: Runtime, project: str) -> list[Experiment]:
    """Every session of ``project`` with its ``insert_date`` (one listing request)."""
    return xnat.list_experiments(rt.xnat, project)


def idempotency_key(server: str, project: str, pipeline: str, experiment: str) -> str:
    """The key that makes "start processing ``experiment`` with ``pipeline``" happen once.

    An experiment ID is unique on one XNAT only: a Prefect server shared by the watchers of
    two XNATs (production and test, two sites) sees the same ``XNAT_E00005`` twice, so the key
    names the server (``server``: its public URL, never one with credentials) and the project
    too."""
    return f"{server}|{project}|{pipeline}|{experiment}"


# Retried on any error: the idempotency key makes a repeated start return the first run.
@task(
    name="start-run",
    task_run_name="start-{project}-{label}",
    retries=2,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,
)
def start_run(
    deployment: str,
    server: str,
    settings_path: str,
    project: str,
    experiment: str,
    label: str,
    pipeline: str,
    host: str,
) -> str:
    """Start (at most once, ever) the deployment's pass for one new session (it stages and
    submits at once; later reconcile passes collect it); return the run's id."""
    run: FlowRun = run_deployment(  # type: ignore[assignment]  # sync here, never a coroutine
        deployment,
        parameters={
            "settings_path": settings_path,
            "project": project,
            "pipeline": pipeline,
            "host": host,
            "experiments": [experiment],
        },
        flow_run_name=f"{project}-{label}",
        idempotency_key=idempotency_key(server, project, pipeline, experiment),
        timeout=0,
        as_subflow=False,
        tags=["x2c", "new-session"],
    )
    run_logger().info("%s/%s: processing run %s (%s)", project, label, run.name, run.id)
    return str(run.id)
