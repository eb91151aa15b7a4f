"""What the ``x2c`` commands do once parsed: the seed form (one experiment, or its dry run),
``run`` (reconcile passes over projects or a list until they are done, or one pass detached)
and ``status`` (read-only, no Prefect). :mod:`cli.main` parses and dispatches here; ``x2c
demo`` is :mod:`cli.demo`."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from cli.runs import Scope, prefect_session, run_passes
from cli.settings import load, seed_settings, write_settings, xnat_config_of
from cli.table import Row, cli_words, format_table, report

# --- the seed form ---------------------------------------------------------------------------


def _seed_target(rt: Any, args: argparse.Namespace, pipeline: str) -> Any:
    """The seed form's one experiment, in one request (a second only when ``--project`` names
    it by accession ID rather than label): never a listing of its whole project. The first
    pass takes it as its listing."""
    from x2c import recipe
    from x2c.errors import XnatNotFoundError
    from x2c.xnat import find_experiment, get_experiment

    if not args.project:
        found = get_experiment(rt.xnat, args.experiment)
    else:
        try:
            found = find_experiment(rt.xnat, args.project, args.experiment)
        except XnatNotFoundError:
            found = get_experiment(rt.xnat, args.experiment)
            if args.project not in (found.project, ""):
                raise XnatNotFoundError(
                    f"project {args.project!r} has no experiment {args.experiment!r} (it belongs "
                    f"to {found.project!r}); check --project, or leave it out"
                ) from None
    rt.looked_up.put(found.id, found)  # the first pass's listing of this experiment
    return recipe.choose([found], found.project, pipeline, args.host)[0]


def intervals_of(settings: Any, hosts: set[str]) -> tuple[float, float]:
    """The shortest and longest wait between passes for ``hosts`` (their poll settings)."""
    configs = [settings.host(h).scheduler for h in sorted(hosts)]
    if not configs:
        return 2.0, 60.0
    return min(c.poll_min_s for c in configs), max(c.poll_max_s for c in configs)


def cmd_seed(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """The seed form: one experiment, or its dry run."""
    from x2c import recipe
    from x2c.plan import plan

    settings, pipeline = seed_settings(args, env)
    if args.dry_run:  # a private runtime; nothing written, not even the settings file
        rt = recipe.Runtime(settings, xnat_config_of(settings, env))
        try:
            for line in plan(rt, _seed_target(rt, args, pipeline)):
                print(line, file=out)
            return 0
        finally:
            rt.close()
    path = write_settings(settings, env)
    # the process-wide runtime the passes open from ``path``: one XNAT login for the command
    settings = load(path, env)
    t = _seed_target(recipe.runtime(settings, xnat_config_of(settings, env)), args, pipeline)
    print(f"x2c: {pipeline} for {t.project}/{t.label} ({t.experiment}) on {t.host}", file=out)
    with prefect_session(quick=True, verbose=args.verbose, out=out):
        rows = run_passes(
            path,
            Scope(t.project, pipeline, t.host, (t.experiment,)),
            retry_failed=args.retry_failed,
            detach=False,
            out=out,
            intervals=intervals_of(settings, {t.host}),
        )
    return report(rows, out)


# --- run and status --------------------------------------------------------------------------


def scope_of_args(settings: Any, args: argparse.Namespace) -> Any:
    """The scope ``run``/``status`` work on (validated: an unknown project entry is one line)."""
    from x2c.reconcile import scope_of

    return scope_of(
        settings, args.project, args.pipeline, args.host, tuple(args.experiments) or None
    )


def cmd_run(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """``x2c run``: passes over a project, a list of its experiments, or every configured one,
    until nothing is pending or in flight (``--detach``: one pass)."""
    settings = load(args.settings, env)
    entries = scope_of_args(settings, args)
    for e in entries:
        what = f"{len(e.experiments)} experiment(s)" if e.experiments else "every experiment"
        print(f"x2c: {e.pipeline} on {e.host} for {what} of {e.project}", file=out)
    with prefect_session(quick=args.quick, verbose=args.verbose, out=out):
        rows = run_passes(
            str(Path(args.settings).expanduser().resolve()),
            Scope(args.project, args.pipeline, args.host, tuple(args.experiments) or None),
            retry_failed=args.retry_failed,
            detach=args.detach,
            out=out,
            intervals=intervals_of(settings, {e.host for e in entries}),
        )
    if args.detach:
        return 1 if any(r.state == "failed" for r in rows) else 0
    return report(rows, out)


_STATUS_WORDS = {"pending": "not started"}


def cmd_status(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    """``x2c status``: a table of where every experiment stands; exit 1 when any failed. Only
    reads: XNAT, the claims and registry on each host, one scheduler look per host."""
    from x2c import recipe, reconcile

    settings = load(args.settings, env)
    entries = scope_of_args(settings, args)
    rt = recipe.Runtime(settings, xnat_config_of(settings, env))
    try:
        s = reconcile.survey(rt, entries, mutate=False)
    finally:
        rt.close()
    found = [s.rows[reconcile.key_of(t)] for t in s.targets if reconcile.key_of(t) in s.rows]
    rows = [
        Row(
            f"{r.project}/{r.label}",
            _STATUS_WORDS.get(r.state, r.state),
            job_id=r.job_id,
            reason=cli_words(r.reason),
        )
        for r in found
    ]
    print(format_table(rows, columns=("experiment", "state", "job_id", "reason")), file=out)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    print("\n" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=out)
    return 1 if any(r.state == "failed" for r in rows) else 0
