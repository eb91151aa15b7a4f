"""Batch schedulers behind one interface (:class:`Scheduler`): SLURM, the local pool, SGE, PBS
and LSF, all driven through a :class:`~x2c.hosts.base.Runner`; :func:`make_scheduler` picks one
from a :class:`~x2c.config.SchedulerConfig`. The per-host poller lives in :mod:`x2c.poller`."""

from __future__ import annotations

from x2c.config import SchedulerConfig
from x2c.errors import ConfigError
from x2c.hosts.base import Runner
from x2c.schedulers.base import FoundJob, JobId, JobSpec, JobState, JobStatus, Scheduler
from x2c.schedulers.local import LocalScheduler
from x2c.schedulers.lsf import LsfScheduler
from x2c.schedulers.pbs import PbsScheduler
from x2c.schedulers.sge import SgeScheduler
from x2c.schedulers.slurm import SlurmScheduler

__all__ = [
    "FoundJob",
    "JobId",
    "JobSpec",
    "JobState",
    "JobStatus",
    "LocalScheduler",
    "LsfScheduler",
    "PbsScheduler",
    "Scheduler",
    "SgeScheduler",
    "SlurmScheduler",
    "make_scheduler",
]


def make_scheduler(
    runner: Runner, config: SchedulerConfig, *, workdir: str | None = None
) -> Scheduler:
    """The scheduler ``config.kind`` names, on the host ``runner`` reaches. The local scheduler
    keeps its job directories in ``config.local_state_dir``, else ``<workdir>/.x2c-local``."""
    if config.kind == "slurm":
        return SlurmScheduler(runner, config)
    if config.kind == "sge":
        return SgeScheduler(runner, config)
    if config.kind == "pbs":
        return PbsScheduler(runner, config)
    if config.kind == "lsf":
        return LsfScheduler(runner, config)
    if config.kind == "local":
        state = config.local_state_dir or (f"{workdir.rstrip('/')}/.x2c-local" if workdir else None)
        return LocalScheduler(runner, config, state)
    raise ConfigError(f"unknown scheduler kind {config.kind!r}; use slurm, sge, pbs, lsf or local")
