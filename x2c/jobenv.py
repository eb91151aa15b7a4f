"""The one allow-list of a job's environment (issue 9: the password reached the job).

A job never inherits the environment it was submitted from: the orchestrator's may hold
``XNAT_PASS`` or a token. Only these names reach it:

* :data:`BASE` (the basics every program expects);
* the names a pipeline declares in ``passenv`` (e.g. a licence path set on the cluster);
* the scheduler's own variables (:data:`SCHEDULER_PREFIXES` and :data:`SCHEDULER_NAMES`), which
  the batch system sets on the node.

Three places apply it, so each scheduler is covered twice: the job script starts again under
``env -i`` with only these (:func:`x2c.jobscript.render_job_script`); submission passes only
these names (``sbatch --export``, ``qsub -v``, ``bsub -env``, :class:`JobSpec.env
<x2c.schedulers.base.JobSpec>`); the local scheduler's launcher and watchdog run under ``env -i``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

BASE: tuple[str, ...] = ("PATH", "HOME", "LANG", "TMPDIR", "USER", "LOGNAME")
"""Names every job gets from the environment it starts in, when they are set there."""

SCHEDULER_PREFIXES: tuple[str, ...] = ("SLURM_", "SGE_", "PBS_", "LSB_", "LSF_")
"""Variables a batch system sets on the node for the job (job id, node list, task counts)."""

SCHEDULER_NAMES: tuple[str, ...] = ("JOB_ID", "NSLOTS", "NHOSTS", "PE_HOSTFILE")
"""Grid Engine's unprefixed job variables (``JOB_ID`` is the job id the script records)."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def job_env_names(passenv: Iterable[str] = ()) -> tuple[str, ...]:
    """:data:`BASE` followed by ``passenv`` (a pipeline's declared names), without repeats.

    These are the names submission passes on (the scheduler's own variables come anyway).
    Raises ValueError for a name that is not a shell variable name.
    """
    names = list(BASE)
    for name in passenv:
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid environment variable name")
        if name not in names:
            names.append(name)
    return tuple(names)


def case_pattern(names: Iterable[str]) -> str:
    """A shell ``case`` pattern matching ``names`` and every scheduler variable. Names are
    validated identifiers, so the pattern needs no quoting."""
    checked = job_env_names(names)
    return "|".join([*checked, *SCHEDULER_NAMES, *(f"{p}*" for p in SCHEDULER_PREFIXES)])
