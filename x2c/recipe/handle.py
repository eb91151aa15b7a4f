"""Which experiment, and everything its steps need, resolved once: a :class:`Target` names an
experiment, pipeline and host (names only, never a secret); :func:`handle` turns it into a
:class:`Handle` (the pipeline, the host's configuration, connection and scheduler, the job
directory) that every step of :mod:`x2c.recipe` takes. :func:`targets` lists a project's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from x2c import jobdir as jd
from x2c import xnat
from x2c.config import HostConfig
from x2c.errors import XnatNotFoundError
from x2c.hosts import Host
from x2c.pipelines import Pipeline
from x2c.runtime import Runtime
from x2c.schedulers import Scheduler


@dataclass(frozen=True)
class Target:
    """One experiment to process with one pipeline on one host: names only, never a secret.

    ``experiment`` is the XNAT accession ID (``XNAT_E00001``), ``label`` its label;
    ``last_modified`` is what the listing said (for the ledger; may be empty).
    """

    project: str
    experiment: str
    label: str
    subject: str
    pipeline: str
    host: str
    last_modified: str = ""
    inserted: str = ""
    """XNAT's ``insert_date``: passes submit the oldest sessions first."""


def name_of(t: Target) -> str:
    """``<pipeline> for <project>/<label>``: how messages name an experiment's work."""
    return f"{t.pipeline} for {t.project}/{t.label}"


@dataclass(frozen=True)
class Handle:
    """A :class:`Target` with its names resolved once: what every step works with.

    ``host`` and ``scheduler`` are the runtime's shared ones, opened on first use (a dry run
    that never touches Y opens no connection)."""

    rt: Runtime
    t: Target
    pipe: Pipeline
    cfg: HostConfig
    jobdir: jd.JobDir

    @property
    def host(self) -> Host:
        """The open host the job runs on (one connection per process, shared)."""
        return self.rt.host(self.t.host)

    @property
    def scheduler(self) -> Scheduler:
        """The host's scheduler."""
        return self.rt.scheduler(self.t.host)

    @property
    def name(self) -> str:
        """How messages name this experiment's work (:func:`name_of`)."""
        return name_of(self.t)


def handle(rt: Runtime, t: Target) -> Handle:
    """Resolve ``t``'s pipeline, host configuration and job directory (raises
    :class:`~x2c.errors.ConfigError` for a name the settings do not define)."""
    cfg = rt.host_config(t.host)
    pipe = rt.pipeline(t.pipeline)
    return Handle(rt, t, pipe, cfg, jd.job_dir(cfg.workdir, pipe.name, t.experiment))


def choose(
    found: Sequence[xnat.Experiment],
    project: str,
    pipeline: str,
    host: str,
    experiments: Sequence[str] | None = None,
) -> list[Target]:
    """The targets of a project listing ``found``: every experiment, or those named in
    ``experiments`` (accession IDs or labels). Raises :class:`XnatNotFoundError` naming the
    experiments the project does not have."""

    def target(e: xnat.Experiment) -> Target:
        return Target(
            e.project, e.id, e.label, e.subject, pipeline, host, e.last_modified, e.insert_date
        )

    if experiments is None:
        return [target(e) for e in found]
    by_name = {e.id: e for e in found} | {e.label: e for e in found}
    missing = [name for name in experiments if name not in by_name]
    if missing:
        raise XnatNotFoundError(
            f"project {project!r} has no experiment {', '.join(map(repr, missing))} "
            "(by accession ID or label); check the names, or the user's access"
        )
    chosen = dict.fromkeys(by_name[name].id for name in experiments)
    return [target(e) for e in found if e.id in chosen]


def targets(
    rt: Runtime,
    project: str,
    pipeline: str,
    host: str,
    experiments: Sequence[str] | None = None,
) -> list[Target]:
    """The targets of ``project`` for ``pipeline`` on ``host`` (see :func:`choose`): one
    listing request."""
    rt.pipeline(pipeline)
    rt.host_config(host)
    return choose(xnat.list_experiments(rt.xnat, project), project, pipeline, host, experiments)


def x2c_version() -> str:
    """x2c's version, for job scripts and provenance."""
    from x2c import __version__  # at call time: x2c/__init__ imports this package

    return __version__
