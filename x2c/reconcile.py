"""Reconcile passes: short, idempotent sweeps that move every experiment of a scope one step
toward "its verified result is on XNAT", without ever waiting for a job.

A pass over a scope (projects x pipelines x hosts, or named experiments) does, in this order:

1. :func:`survey`: one XNAT listing per project (the ledger answers for experiments it already
   knows at their current ``last_modified``: done, nothing to process, or failed); one claim
   scan per host (:func:`x2c.claims.scan`: every experiment in flight there with its registry
   entry); ONE scheduler poll per host for all of their jobs (:func:`x2c.poller.poll_jobs`).
   Ended jobs are recorded; failed ones give their place back at once.
2. :func:`finish` for each job that completed: collect, upload (verified, provenance last) and
   clean, under the experiment's ``finishing`` claim. A verified result already on XNAT is
   never replaced: the job directory is cleaned and the experiment is done.
3. :func:`claim_places`: the oldest sessions not yet done, as many as the host has free places
   (``max_in_flight`` minus the claims on Y), capped by ``max_submit_per_pass``; the claim is
   made on Y under the host-wide lock, so concurrent passes never exceed the cap.
4. :func:`launch` for each claimed experiment: select, stage, build, submit.

Jobs still queued or running cost one line of the poll. A pass killed anywhere is finished by
the next: a claim without a job is taken over once it goes stale, a ``submitting`` entry is
resolved with ``find(tag)``, an upload cut halfway leaves a resource without provenance that
the next finish replaces. Two passes at once make one job and one upload per experiment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from x2c import claims, escalation, recipe, xnat
from x2c import jobdir as jd
from x2c.errors import (
    ConfigError,
    IntegrityError,
    JobFailedError,
    NothingToProcessError,
    PipelineError,
    SSHConnectError,
    SubmissionError,
    X2CError,
    XnatConflictError,
    XnatTransientError,
)
from x2c.ledger import DONE as LEDGER_DONE
from x2c.ledger import FAILED as LEDGER_FAILED
from x2c.ledger import NOTHING as LEDGER_NOTHING
from x2c.ledger import is_fresh
from x2c.poller import SUBMITTING, UPLOADED, Watched, is_live, is_success, poll_jobs
from x2c.provenance import public_url
from x2c.recipe import Runtime, Target, registry
from x2c.schedulers import JobSpec
from x2c.settings import Settings

log = logging.getLogger(__name__)

DONE = "done"
SKIPPED = "skipped"
FAILED = "failed"
IN_FLIGHT = "in flight"
PENDING = "pending"
FINAL = frozenset({DONE, SKIPPED, FAILED})
"""Row states: the first three end an experiment's part in a run; the others need more passes."""


@dataclass(frozen=True)
class ScopeEntry:
    """One part of a pass's scope: ``pipeline`` on ``host`` for ``project`` (every experiment,
    or the ``experiments`` named by accession ID or label)."""

    project: str
    pipeline: str
    host: str
    experiments: tuple[str, ...] | None = None


def scope_of(
    settings: Settings,
    project: str | None = None,
    pipeline: str | None = None,
    host: str | None = None,
    experiments: Sequence[str] | None = None,
) -> list[ScopeEntry]:
    """The scope a command or deployment names: the ``projects:`` entries of the settings (of
    ``project``, or all; narrowed by ``pipeline``/``host``), or ``project`` with ``pipeline``
    and ``host`` when all three are given. Raises :class:`ConfigError` when nothing matches."""
    named = tuple(experiments) if experiments else None
    if project and pipeline and host:
        settings.pipeline(pipeline)
        settings.host(host)
        return [ScopeEntry(project, pipeline, host, named)]
    runs = [
        r
        for r in settings.projects
        if project in (None, r.project)
        and pipeline in (None, r.pipeline)
        and host in (None, r.host)
    ]
    if not runs:
        what = f"project {project!r}" if project else "any project"
        raise ConfigError(
            f"{settings.source}: no projects entry for {what}; add one under projects:, or give "
            "the project with its pipeline and host"
        )
    if named and len({r.project for r in runs}) > 1:
        raise ConfigError("naming experiments needs their project too")
    return [ScopeEntry(r.project, r.pipeline, r.host, named) for r in runs]


@dataclass(frozen=True)
class Row:
    """Where one experiment stands after a pass, and what the pass did for it (``action``:
    ``submit``, ``collect``, ``verify`` (uploaded; the next pass verifies it), ``attach``,
    ``skip_done``, ``report_failed``, ``wait``)."""

    project: str
    experiment: str
    label: str
    pipeline: str
    host: str
    state: str
    action: str = ""
    job_id: str = ""
    since: str = ""
    """When the job was submitted (ISO 8601), for a job in flight or ended."""
    reason: str = ""
    xnat_uri: str = ""
    log_tail: str = ""

    @classmethod
    def of(cls, t: Target, state: str, reason: str, **fields: str) -> Row:
        """The row of target ``t``."""
        return cls(
            t.project, t.experiment, t.label, t.pipeline, t.host, state, reason=reason, **fields
        )

    @property
    def final(self) -> bool:
        """True when this run has nothing more to do for the experiment."""
        return self.state in FINAL

    @property
    def failed(self) -> bool:
        """True when the experiment failed."""
        return self.state == FAILED


Key = tuple[str, str, str]


def key_of(x: Target | Row) -> Key:
    """What identifies an experiment's work (of a target or of its row): host, pipeline and
    accession ID."""
    return (x.host, x.pipeline, x.experiment)


@dataclass
class Survey:
    """What :func:`survey` found: the rows it could settle, the jobs to finish, and per host
    the experiments to launch (checked on XNAT, oldest first), the stale claims to take over,
    and the claims counted."""

    targets: list[Target]
    rows: dict[Key, Row] = field(default_factory=dict)
    finish: list[Target] = field(default_factory=list)
    launch: dict[str, list[Target]] = field(default_factory=dict)
    take_over: dict[str, list[tuple[Target, claims.Claim]]] = field(default_factory=dict)
    escalate: list[Target] = field(default_factory=list)
    """Ended OUT_OF_MEMORY/TIMEOUT, launched again bigger: they keep their claim."""
    claimed: dict[str, int] = field(default_factory=dict)


def _result_uri(rt: Runtime, t: Target) -> str:
    pipe = rt.pipeline(t.pipeline)
    server = public_url(rt.xnat_config.url)
    return f"{server}/data/experiments/{t.experiment}/resources/{pipe.resource}"


def _since(record: jd.JobRecord | None) -> str:
    return record.submitted_at.isoformat(timespec="seconds") if record else ""


def list_scope(rt: Runtime, scope: Iterable[ScopeEntry]) -> list[Target]:
    """The targets of ``scope``: one listing request per project, whatever its entries; none
    for an entry naming experiments the seed form just looked up (``rt.looked_up``)."""
    listings: dict[str, list[xnat.Experiment]] = {}
    found: list[Target] = []
    for entry in scope:
        if entry.project not in listings and entry.experiments:
            kept = [rt.looked_up.take(e) for e in entry.experiments]
            if all(k is not None and k.project == entry.project for k in kept):
                listings[entry.project] = [k for k in kept if k is not None]
        if entry.project not in listings:
            listings[entry.project] = xnat.list_experiments(rt.xnat, entry.project)
        found += recipe.choose(
            listings[entry.project], entry.project, entry.pipeline, entry.host, entry.experiments
        )
    return found


def survey(
    rt: Runtime,
    scope: Sequence[ScopeEntry],
    *,
    retry_failed: bool = False,
    mutate: bool = True,
) -> Survey:
    """Steps 1 of a pass (see the module docstring). With ``mutate=False`` (``x2c status``)
    nothing is written anywhere: ended jobs are reported as the poll saw them, every
    experiment the ledger does not know is checked on XNAT, and no claim is touched."""
    out = Survey(list_scope(rt, scope))
    hosts = sorted({t.host for t in out.targets})
    by_host: dict[str, dict[str, claims.Claim]] = {}
    for name in hosts:
        by_host[name] = _scan_and_poll(rt, name, mutate, out)
    unknown: dict[str, list[Target]] = {name: [] for name in hosts}
    for t in out.targets:
        cfg = rt.host_config(t.host)
        claim = by_host[t.host].get(claims.relpath(cfg.workdir, t.pipeline, t.experiment))
        if claim is None:
            row = _from_ledger(rt, t, retry_failed)
            if row is None:
                unknown[t.host].append(t)
            else:
                out.rows[key_of(t)] = row
            continue
        row = _claimed(rt, t, claim, out, retry_failed=retry_failed, mutate=mutate)
        if row is None:
            unknown[t.host].append(t)
        else:
            out.rows[key_of(t)] = row
    for name in hosts:
        _choose_launches(rt, name, unknown[name], out, retry_failed=retry_failed, mutate=mutate)
    return out


def _scan_and_poll(rt: Runtime, name: str, mutate: bool, out: Survey) -> dict[str, claims.Claim]:
    cfg = rt.host_config(name)
    host = rt.host(name)
    found = claims.scan(host, cfg.workdir)
    watched = {
        rel: Watched(c.record, c.jobdir)
        for rel, c in found.items()
        if c.record is not None and c.record.job_id and is_live(c.record.state)
    }
    sched = rt.scheduler(name)
    changed = poll_jobs(sched, watched, time.time(), observe=not mutate) if watched else {}
    for rel, record in changed.items():
        if mutate:
            host.write_atomic(found[rel].jobdir.registry, jd.encode_record(record))
        found[rel] = replace(found[rel], record=record)
    out.claimed[name] = len(found)
    return found


def _from_ledger(rt: Runtime, t: Target, retry_failed: bool) -> Row | None:
    """The row the ledger settles without a request, or None."""
    pipe = rt.pipeline(t.pipeline)
    entry = rt.ledger.entry(t.project, t.pipeline, t.experiment)
    if not is_fresh(entry, t.last_modified, pipe.version):
        return None
    assert entry is not None
    verdict, reason = entry.get("verdict"), str(entry.get("reason", ""))
    if verdict == LEDGER_DONE:
        return Row.of(
            t,
            DONE,
            f"{pipe.resource} of version {pipe.version} is on XNAT (checked "
            f"{entry.get('checked_at', '')})",
            action="skip_done",
            xnat_uri=_result_uri(rt, t),
        )
    if verdict == LEDGER_NOTHING:
        return Row.of(t, SKIPPED, f"skipped: {reason}")
    if verdict == LEDGER_FAILED and not retry_failed:
        return Row.of(
            t,
            FAILED,
            reason + "; fix the cause (or the inputs on XNAT), or run again with --retry-failed",
            action="report_failed",
            job_id=str(entry.get("job_id", "")),
        )
    return None


def _claimed(
    rt: Runtime,
    t: Target,
    claim: claims.Claim,
    out: Survey,
    *,
    retry_failed: bool,
    mutate: bool,
) -> Row | None:
    """The row of an experiment holding a place on its host (None: launch it again)."""
    cfg = rt.host_config(t.host)
    record = claim.record
    abandoned = claim.abandoned(cfg.claim_stale_s)
    if record is not None and record.state == SUBMITTING and abandoned:
        resolved = registry.resolve_submitting(recipe.handle(rt, t), record)
        if resolved is not None and mutate:
            rt.host(t.host).write_atomic(claim.jobdir.registry, jd.encode_record(resolved))
        record = resolved
    if record is None or (record.state == SUBMITTING and not record.job_id):
        if not abandoned:
            return Row.of(
                t,
                IN_FLIGHT,
                f"another run is staging and submitting it (claimed {claim.age_s} s ago)",
                action="wait",
            )
        out.take_over.setdefault(t.host, []).append((t, claim))
        return Row.of(
            t,
            PENDING,
            f"the run that claimed it {claim.age_s} s ago stopped; taking it over",
            action="wait",
        )
    common = {"job_id": record.job_id, "since": _since(record)}
    if is_live(record.state):
        return Row.of(
            t,
            IN_FLIGHT,
            f"job {record.job_id} is {record.state.lower()}",
            action="attach",
            **common,
        )
    if is_success(record.state):
        if claim.finishing_age_s is not None and claim.finishing_age_s < cfg.claim_stale_s:
            return Row.of(
                t, IN_FLIGHT, "another run is uploading its result", action="wait", **common
            )
        out.finish.append(t)
        doing = "verifying its upload" if record.state == UPLOADED else "collecting"
        return Row.of(
            t, IN_FLIGHT, f"job {record.job_id} completed; {doing}", action="collect", **common
        )
    # the job ended OUT_OF_MEMORY or TIMEOUT and the pipeline escalates: launch it again,
    # bigger, keeping its place (x2c.escalation); anything else is reported, never looped
    request, why = escalation.next_request(rt.pipeline(t.pipeline).escalation, cfg, record)
    if request is not None and mutate:
        escalated = escalation.after(record, request)
        rt.host(t.host).write_atomic(claim.jobdir.registry, jd.encode_record(escalated))
        out.escalate.append(t)
        log.info("%s: job %s %s", t.label, record.job_id, why)
        return Row.of(t, IN_FLIGHT, f"job {record.job_id} {why}", action="escalate", **common)
    # the job failed: give its place back; report it (again) unless asked to retry
    if mutate:
        claims.release(rt.host(t.host), claim.jobdir)
        out.claimed[t.host] -= 1
    reason = _failure_reason(rt, t, record) + (f"; {why}" if why else "")
    if retry_failed:
        return None
    if mutate:
        rt.ledger.record(
            t.project,
            t.pipeline,
            rt.pipeline(t.pipeline).version,
            [(t.experiment, t.last_modified, LEDGER_FAILED, reason)],
            job_ids={t.experiment: record.job_id},
        )
    return Row.of(t, FAILED, reason, action="ended", log_tail=record.log_tail, **common)


def _failure_reason(rt: Runtime, t: Target, record: jd.JobRecord) -> str:
    log_path = jd.job_dir(rt.host_config(t.host).workdir, t.pipeline, t.experiment).log
    return (
        f"job {record.job_id} ended {record.state} (exit {record.exit_code}): {record.reason}; "
        f"its log is {t.host}:{log_path}"
    )


def _choose_launches(
    rt: Runtime,
    name: str,
    unknown: list[Target],
    out: Survey,
    *,
    retry_failed: bool,
    mutate: bool,
) -> None:
    """Check the oldest experiments not in flight on XNAT until the host's free places are
    spoken for; the rest wait for a later pass (``pending``) unchecked."""
    cfg = rt.host_config(name)
    free = cfg.max_in_flight - out.claimed[name]
    if cfg.max_submit_per_pass is not None:
        free = min(free, cfg.max_submit_per_pass)
    free -= len(out.take_over.get(name, []))
    chosen: list[Target] = []
    for t in sorted(unknown, key=lambda t: (t.inserted or "~", t.label)):
        if mutate and len(chosen) >= free:
            out.rows[key_of(t)] = Row.of(
                t,
                PENDING,
                f"waiting for a place on {name} ({out.claimed[name] + len(chosen)} of "
                f"{cfg.max_in_flight} in flight)",
                action="wait",
            )
            continue
        row = check(rt, t, retry_failed=retry_failed, mutate=mutate)
        if row is not None:
            out.rows[key_of(t)] = row
        elif mutate:
            chosen.append(t)
        else:
            out.rows[key_of(t)] = Row.of(t, PENDING, "not started")
    out.launch[name] = chosen


def check(rt: Runtime, t: Target, *, retry_failed: bool = False, mutate: bool = True) -> Row | None:
    """An experiment nobody is working on: its row when it needs no job (its verified result
    is on XNAT; its last job failed and nothing changed since), else None. As a rule 1 XNAT
    request (:func:`_result_status`), plus the input selection only for a failed job whose
    experiment changed on XNAT."""
    h = recipe.handle(rt, t)
    pipe = h.pipe
    status = _result_status(rt, t, mutate=mutate)
    if status.done:
        return Row.of(t, DONE, status.reason, action="skip_done", xnat_uri=_result_uri(rt, t))
    try:
        record = registry.read(h)
    except PipelineError as exc:  # a corrupt registry entry: this experiment only
        return Row.of(t, FAILED, str(exc), action="report_failed")
    if record is not None and record.job_id and is_live(record.state):
        if mutate:
            claims.adopt(h.host, h.jobdir)
        return Row.of(
            t,
            IN_FLIGHT,
            f"job {record.job_id} was {record.state.lower()} without a claim; adopted",
            action="attach",
            job_id=record.job_id,
            since=_since(record),
        )
    if retry_failed:
        return None
    try:
        registry.check_failed(h)
    except JobFailedError as exc:
        if mutate:
            rt.ledger.record(
                t.project,
                t.pipeline,
                pipe.version,
                [(t.experiment, t.last_modified, LEDGER_FAILED, str(exc))],
                job_ids={t.experiment: exc.job_id or ""},
            )
        return Row.of(
            t,
            FAILED,
            str(exc),
            action="report_failed",
            job_id=exc.job_id or "",
            log_tail=exc.log_tail,
        )
    except PipelineError as exc:  # e.g. a corrupt registry entry: this experiment only
        return Row.of(t, FAILED, str(exc), action="report_failed")
    return None


def _result_status(
    rt: Runtime, t: Target, *, mutate: bool = True, listing: bool = False
) -> xnat.ResourceStatus:
    """The status of ``t``'s result, in 1 request as a rule; a verified result of this pipeline
    version is recorded in the ledger (``mutate``), at the ``last_modified`` of this pass's
    listing (made before this request, so any later change shows as a change).

    An experiment the ledger never saw is most likely new: its document answers whether the
    result resource exists at all and holds the scans the launch selects from (kept for it,
    with ``mutate``, also when an outdated or damaged result must be redone), so checking and
    selecting cost one request, not two. One the ledger
    knows (it changed since), or one whose result was just uploaded (``listing``), most likely
    holds a result: the result's listing answers (a document read first would be a second)."""
    pipe = rt.pipeline(t.pipeline)
    if not listing and rt.ledger.entry(t.project, t.pipeline, t.experiment) is None:
        contents = xnat.experiment_contents(rt.xnat, t.experiment)
        if mutate:  # a launch follows unless a verified result is there
            rt.documents.put(t.experiment, contents)
        if pipe.resource not in contents.resources:
            where = f"resource {pipe.resource} of {t.experiment}"
            return xnat.ResourceStatus(xnat.ResourceState.MISSING, f"{where} does not exist")
    status = xnat.resource_status(rt.xnat, t.experiment, pipe.resource, pipe.version, read=False)
    if status.done and mutate:
        rt.ledger.record(
            t.project, t.pipeline, pipe.version, [(t.experiment, t.last_modified, LEDGER_DONE, "")]
        )
    return status


def claim_places(rt: Runtime, s: Survey) -> tuple[list[Target], list[Row]]:
    """Claim the survey's chosen experiments on their hosts (one command per host): the targets
    granted, in order, and a ``pending`` row for each one another pass got first (the document
    its check read is dropped: a later launch reads the experiment afresh)."""
    granted: list[Target] = list(s.escalate)  # they kept their claim
    denied: list[Row] = []
    for name in sorted(set(s.launch) | set(s.take_over)):
        cfg = rt.host_config(name)
        stale = s.take_over.get(name, [])
        taking_over = {claims.relpath(cfg.workdir, t.pipeline, t.experiment): t for t, _ in stale}
        new = {
            claims.relpath(cfg.workdir, t.pipeline, t.experiment): t for t in s.launch.get(name, [])
        }
        got = claims.reserve(
            rt.host(name),
            cfg.workdir,
            cap=cfg.max_in_flight,
            stale_s=cfg.claim_stale_s,
            new=list(new),
            take_over=[c for _, c in stale],
        )
        ok = set(got.new) | set(got.taken_over)
        for r, t in [*taking_over.items(), *new.items()]:
            if r in ok:
                granted.append(t)
                continue
            rt.documents.take(t.experiment)
            if r in got.gone:
                why = f"its claim on {name} was released meanwhile (another run finished it)"
            elif r in taking_over:
                why = f"its claim on {name} was renewed, or taken over by another run, meanwhile"
            else:
                why = f"another run took the last places on {name}"
            denied.append(Row.of(t, PENDING, f"{why}; the next pass checks it", action="wait"))
    return granted, denied


TRANSIENT = (XnatTransientError, SSHConnectError)


def _retry_note(exc: BaseException) -> str:
    if isinstance(exc, TRANSIENT):
        return "; the next pass tries again"
    return ""


@dataclass(frozen=True)
class Prepared:
    """A claimed experiment staged and built on its host; its job is not submitted yet."""

    h: recipe.Handle
    spec: JobSpec

    @property
    def alone(self) -> bool:
        """An escalated attempt (it asks for more than the pipeline declares) is submitted
        alone, never in an array."""
        pipe = self.h.pipe
        return (self.spec.mem_mb, self.spec.walltime_s) != (pipe.mem_mb, pipe.walltime_seconds)


def prepare(rt: Runtime, t: Target) -> Prepared | Row:
    """Select, stage and build a claimed experiment, renewing its claim meanwhile. Nothing to
    process gives the place back (``skipped``); so does an error (``failed`` for this run,
    tried again by the next pass)."""
    h = recipe.handle(rt, t)
    host, jobdir = h.host, h.jobdir
    try:
        claims.renew(host, jobdir)
        with claims.renewing(host, jobdir, stale_s=h.cfg.claim_stale_s):
            selection = recipe.select(h)
            with rt.xnat_slot:
                recipe.stage(h, selection)
            spec = recipe.build(h, selection)
            claims.renew(host, jobdir)
    except NothingToProcessError as exc:
        claims.release(host, jobdir)
        return Row.of(t, SKIPPED, f"skipped: {exc.reason}", action="submit")
    except X2CError as exc:
        claims.release(host, jobdir)
        return Row.of(t, FAILED, f"{type(exc).__name__}: {exc}{_retry_note(exc)}", action="submit")
    return Prepared(h, spec)


def arrays_on(rt: Runtime, host: str) -> bool:
    """Whether a pass submits ``host``'s experiments as job arrays: its scheduler takes them
    (SLURM) and its settings do not opt out (``scheduler.arrays: false``)."""
    return rt.host_config(host).scheduler.arrays and rt.scheduler(host).arrays


def groups(rt: Runtime, prepared: Sequence[Prepared]) -> list[list[Prepared]]:
    """The submissions ``prepared`` make: one per (host, pipeline, resources) group where the
    host takes arrays, split at the cluster's ``MaxArraySize``; one per job otherwise, and for
    every escalated attempt."""
    out: list[list[Prepared]] = []
    shared: dict[tuple[object, ...], list[Prepared]] = {}
    for p in prepared:
        if p.alone or not arrays_on(rt, p.h.t.host):
            out.append([p])
            continue
        s = p.spec
        key = (p.h.t.host, p.h.pipe.name, s.cpus, s.mem_mb, s.walltime_s, s.env)
        shared.setdefault(key, []).append(p)
    for members in shared.values():
        size = max(1, rt.scheduler(members[0].h.t.host).max_array_size)
        out += [members[i : i + size] for i in range(0, len(members), size)]
    return out


def submit_group(rt: Runtime, group: Sequence[Prepared]) -> list[Row]:
    """Submit a group of :func:`groups`: one job, or one array of them. A submission the
    scheduler refused, with no job carrying its tag, gives the places back; any other error
    keeps them, and once stale the next pass resolves them with ``find(tag)``."""
    h0 = group[0].h
    tag = group[0].spec.tag if len(group) == 1 else recipe.array_tag(h0.pipe.name)
    try:
        claims.renew(h0.host, *(p.h.jobdir for p in group))
        if len(group) == 1:
            ids = [recipe.submit(h0, group[0].spec)]
        else:
            throttle = h0.cfg.scheduler.array_throttle
            ids = recipe.submit_array([(p.h, p.spec) for p in group], tag, throttle)
    except X2CError as exc:
        note = _retry_note(exc)
        if _refused(group, tag, exc):
            note = "; no job carries its tag: the next pass submits again"
            for p in group:
                claims.release(p.h.host, p.h.jobdir)
        reason = f"{type(exc).__name__}: {exc}{note}"
        return [Row.of(p.h.t, FAILED, reason, action="submit") for p in group]
    since = datetime.now(UTC).isoformat(timespec="seconds")
    array = f" (task of an array of {len(group)})" if len(group) > 1 else ""
    return [
        Row.of(
            p.h.t,
            IN_FLIGHT,
            f"submitted as job {job_id}{array}",
            action="submit",
            job_id=str(job_id),
            since=since,
        )
        for p, job_id in zip(group, ids, strict=True)
    ]


def launch(rt: Runtime, t: Target) -> Row:
    """Select, stage, build and submit one claimed experiment (:func:`prepare`, then
    :func:`submit_group` of one)."""
    got = prepare(rt, t)
    return got if isinstance(got, Row) else submit_group(rt, [got])[0]


@contextmanager
def holding(rt: Runtime, granted: Sequence[Target]) -> Iterator[None]:
    """Renew the claims of ``granted`` while the block launches them: a job staged early
    waits for the rest of its array, and must not look abandoned meanwhile."""
    with ExitStack() as stack:
        by_host: dict[str, list[jd.JobDir]] = {}
        for t in granted:
            by_host.setdefault(t.host, []).append(recipe.handle(rt, t).jobdir)
        for name, jobdirs in by_host.items():
            stale_s = rt.host_config(name).claim_stale_s
            stack.enter_context(claims.renewing(rt.host(name), *jobdirs, stale_s=stale_s))
        yield


def _refused(group: Sequence[Prepared], tag: str, exc: X2CError) -> bool:
    """After a failed submission: True when the scheduler refused it and holds no job with the
    tag, so nothing is in flight; the ``submitting`` entries are then removed. Otherwise
    (the job may exist: sbatch can fail after queueing it) the claims stay, and once stale the
    next pass resolves them with ``find(tag)``. Without this, a refused sbatch was shown as
    "another run is staging and submitting it" until the claim went stale."""
    if not isinstance(exc, SubmissionError):
        return False
    h0 = group[0].h
    try:
        if h0.scheduler.find(tag):
            return False
        for p in group:
            p.h.host.remove(p.h.jobdir.registry)
    except X2CError:
        return False
    return True


MAX_UPLOADS = 3
"""Uploads of one job's result that may fail their verification before the job is failed."""


def _upload_result(
    rt: Runtime, h: recipe.Handle, record: jd.JobRecord | None, *, ask_first: bool
) -> str | None:
    """Collect and upload ``h``'s result unless a verified one is there: None when this call
    uploaded it (the next pass verifies it), else the row's reason (a verified result: this
    job's upload, verified now, or another run's). As a rule no result exists yet, so the upload
    goes ahead without asking (one request less); ``ask_first`` when one may exist (a pass
    stopped while finishing, or this job's upload waits for its verification). A verified result
    of this pipeline version is kept as it is (never deleted by a run that did not find it
    damaged); anything else is replaced by this job's archive, at most :data:`MAX_UPLOADS`
    times. A verified result also stands when the archive on Y is gone or damaged, or of
    another pipeline version."""
    ours = record is not None and record.state == UPLOADED
    kept = "kept the verified result on XNAT (uploaded by another run)"
    found = _result_status(rt, h.t, listing=True) if ask_first else None
    if found is not None and found.done:
        return "result uploaded and verified" if ours else kept
    if ours and record is not None and found is not None:
        if record.uploads >= MAX_UPLOADS:
            raise IntegrityError(
                f"{h.name}: the result was uploaded {record.uploads} times and XNAT never listed "
                f"it as sent: {found.reason}; check XNAT's storage and that it keeps checksums "
                "(site settings), then run again with --retry-failed",
                name=h.pipe.resource,
                expected=xnat.ResourceState.DONE.value,
                actual=found.state.value,
            )
        log.warning("%s: the uploaded result did not verify (%s); uploading again", h.name, found)
    state = found.state if found is not None else xnat.ResourceState.MISSING
    try:
        archive = recipe.collect(h)
        try:
            with rt.xnat_slot:
                recipe.upload(h, archive, found=state)
        except XnatConflictError:
            if state is not xnat.ResourceState.MISSING:
                raise
            found = _result_status(rt, h.t, listing=True)  # there all along, or made meanwhile
            if found.done:
                return kept
            with rt.xnat_slot:
                recipe.upload(h, archive, found=found.state)
    except (IntegrityError, PipelineError):
        if ask_first or not _result_status(rt, h.t, listing=True).done:
            raise
        return kept
    return None


def finish(rt: Runtime, t: Target) -> Row:
    """Collect, upload (:func:`_upload_result`) and clean a completed job under the
    experiment's finishing claim. An upload is verified by the next pass (its one status
    request is also what settles the ledger); the job directory stays until then, so a failed
    verification uploads again from it. It is cleaned once the result is verified, or when
    the job is failed."""
    h = recipe.handle(rt, t)
    cfg, host, jobdir = h.cfg, h.host, h.jobdir
    rel = claims.relpath(cfg.workdir, t.pipeline, t.experiment)
    taken = claims.take_finishing(host, cfg.workdir, rel, stale_s=cfg.claim_stale_s)
    if taken is None:
        return Row.of(t, IN_FLIGHT, "another run is uploading its result", action="wait")
    record = registry.read(h)
    common = {"job_id": record.job_id if record else "", "since": _since(record)}
    completed = f"job {common['job_id']} completed"
    # a pass that stopped while finishing may have uploaded: ask first, never write over it
    ask = taken is claims.Finishing.TAKEN_OVER or (record is not None and record.state == UPLOADED)
    try:
        with claims.renewing(host, jobdir, stale_s=cfg.claim_stale_s, marker=jd.FINISHING):
            reason = _upload_result(rt, h, record, ask_first=ask)
        if reason is None:
            claims.release(host, jobdir, finishing_only=True)
            return Row.of(
                t,
                IN_FLIGHT,
                f"{completed}; result uploaded, the next pass verifies it",
                action="verify",
                **common,
            )
        removed = recipe.clean(h)
    except X2CError as exc:
        claims.release(host, jobdir, finishing_only=True)
        # a conflict: the result resource appeared again since the status check (another
        # uploader); the next pass's check decides whether it is a verified result
        if isinstance(exc, (*TRANSIENT, XnatConflictError)):
            return Row.of(
                t,
                FAILED,
                f"{type(exc).__name__}: {exc}; the next pass tries again",
                action="collect",
                **common,
            )
        registry.record_failure(h, f"{type(exc).__name__}: {exc}")
        claims.release(host, jobdir)
        return Row.of(t, FAILED, f"{type(exc).__name__}: {exc}", action="collect", **common)
    if not removed:  # keep_workdir: the directory stays, its place is given back
        claims.release(host, jobdir)
    return Row.of(
        t, DONE, f"{completed}; {reason}", action="collect", xnat_uri=_result_uri(rt, t), **common
    )


def run_pass(
    rt: Runtime, scope: Sequence[ScopeEntry], *, retry_failed: bool = False, workers: int = 8
) -> list[Row]:
    """One pass without Prefect (the flows run the same steps as tasks): a row per target."""
    from concurrent.futures import ThreadPoolExecutor

    s = survey(rt, scope, retry_failed=retry_failed)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for t, row in zip(s.finish, pool.map(lambda t: finish(rt, t), s.finish), strict=True):
            s.rows[key_of(t)] = row
        granted, denied = claim_places(rt, s)
        for row in denied:
            s.rows[key_of(row)] = row
        with holding(rt, granted):
            prepared = []
            for t, got in zip(granted, pool.map(lambda t: prepare(rt, t), granted), strict=True):
                if isinstance(got, Row):
                    s.rows[key_of(t)] = got
                else:
                    prepared.append(got)
            for rows in pool.map(lambda g: submit_group(rt, g), groups(rt, prepared)):
                s.rows.update((key_of(r), r) for r in rows)
    return [s.rows[key_of(t)] for t in s.targets if key_of(t) in s.rows]
