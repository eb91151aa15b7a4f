"""What the ``x2c`` commands do once parsed: the seed form (one experiment, or its dry run),
``run`` (process-experiments over projects or a list) and ``status`` (reconcile, no Prefect).
:mod:`flows.cli` parses and dispatches here; ``x2c demo`` is :mod:`flows.demo`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from flows.runs import Batch, prefect_session, run_batches
from flows.settings import load, seed_settings, write_settings, xnat_config_of
from flows.table import Row, cli_words, format_table, report
from x2c.errors import ConfigError, JobFailedError, X2CError

# --- the seed form ---------------------------------------------------------------------------


def _seed_target(rt: Any, args: argparse.Namespace, pipeline: str) -> Any:
    from x2c import recipe
    from x2c.xnat import get_experiment

    project = args.project or get_experiment(rt.xnat, args.experiment).project
    return recipe.targets(rt, project, pipeline, args.host, [args.experiment])[0]


def cmd_seed(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """The seed form: one experiment, or its dry run."""
    from x2c import recipe

    settings, pipeline = seed_settings(args, env)
    if args.dry_run:
        rt = recipe.Runtime(settings, xnat_config_of(settings, env))
        try:
            t = _seed_target(rt, args, pipeline)
            for line in recipe.plan(rt, t):
                print(line, file=out)
        finally:
            rt.close()
        return 0
    path = write_settings(settings, env)
    rt = recipe.Runtime(settings, xnat_config_of(settings, env))
    try:
        t = _seed_target(rt, args, pipeline)
    finally:
        rt.close()
    print(f"x2c: {pipeline} for {t.project}/{t.label} ({t.experiment}) on {t.host}", file=out)
    with prefect_session(quick=True, verbose=args.verbose, out=out):
        rows = run_batches(
            path,
            [Batch(t.project, pipeline, t.host, (t.experiment,))],
            retry_failed=args.retry_failed,
        )
    return report(rows, out)


# --- run and status --------------------------------------------------------------------------


def batches_of(settings: Any, args: argparse.Namespace) -> list[Batch]:
    """What ``run``/``status`` work on: the ``projects:`` entries of the settings (those of
    PROJECT, or every one), or PROJECT with ``--pipeline``/``--host`` when given."""
    experiments = tuple(args.experiments) or None
    if args.project and args.pipeline and args.host:
        return [Batch(args.project, args.pipeline, args.host, experiments)]
    runs = [r for r in settings.projects if args.project in (None, r.project)]
    runs = [r for r in runs if args.pipeline in (None, r.pipeline) and args.host in (None, r.host)]
    if not runs:
        what = f"project {args.project!r}" if args.project else "any project"
        raise ConfigError(
            f"{settings.source}: no projects entry for {what}; add one under projects:, or give "
            "PROJECT with --pipeline and --host"
        )
    if experiments and len({r.project for r in runs}) > 1:
        raise ConfigError("naming experiments needs PROJECT too")
    return [Batch(r.project, r.pipeline, r.host, experiments) for r in runs]


def cmd_run(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """``x2c run``: process a project, a list of its experiments, or every configured one."""
    settings = load(args.settings, env)
    batches = batches_of(settings, args)
    for b in batches:
        what = f"{len(b.experiments)} experiment(s)" if b.experiments else "every experiment"
        print(f"x2c: {b.pipeline} on {b.host} for {what} of {b.project}", file=out)
    with prefect_session(quick=args.quick, verbose=args.verbose, out=out):
        rows = run_batches(
            str(Path(args.settings).expanduser().resolve()), batches, retry_failed=args.retry_failed
        )
    return report(rows, out)


def status_row(rt: Any, t: Any) -> Row:
    """Where one target stands, from reconcile (``recipe.decide``): done, in flight with its
    job id, finished but not uploaded, failed with its reason, or not started."""
    from x2c import recipe
    from x2c.recipe import Action

    name = f"{t.project}/{t.label}"
    try:
        d = recipe.decide(rt, t)
    except JobFailedError as exc:
        why = str(exc).removeprefix(f"{t.pipeline} for {name}: ")
        return Row(name, "failed", job_id=exc.job_id or "", reason=cli_words(why))
    except X2CError as exc:
        return Row(name, "error", reason=str(exc))
    state = {
        Action.SKIP_DONE: "done",
        Action.ATTACH: "in flight",
        Action.COLLECT: "finished",
        Action.SUBMIT: "not started",
    }[d.action]
    return Row(name, state, job_id=str(d.job_id or ""), reason=d.reason)


def cmd_status(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """``x2c status``: a table of where every experiment stands; exit 1 when any failed."""
    from x2c import recipe

    settings = load(args.settings, env)
    rt = recipe.Runtime(settings, xnat_config_of(settings, env))
    rows: list[Row] = []
    try:
        for b in batches_of(settings, args):
            targets = recipe.targets(rt, b.project, b.pipeline, b.host, b.experiments)
            with ThreadPoolExecutor(max_workers=8) as pool:
                rows += list(pool.map(lambda t: status_row(rt, t), targets))
    finally:
        rt.close()
    print(format_table(rows, columns=("experiment", "state", "job_id", "reason")), file=out)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    print("\n" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
    return 1 if any(r.state in ("failed", "error") for r in rows) else 0
