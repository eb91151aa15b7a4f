"""The scheduler seam: one small ABC every batch system implements, and the types it speaks.

A :class:`Scheduler` turns a :class:`JobSpec` (a job script already written on the host) into a
:data:`JobId`, asks about many jobs in one call (:meth:`Scheduler.poll`), cancels many in one call,
and finds jobs again by their tag after an orchestrator restart. Backends never open connections or
processes themselves: they hand argv lists to a :class:`~x2c.hosts.base.Runner`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NewType
from xml.etree import ElementTree

from x2c.config import SchedulerConfig
from x2c.errors import RemoteCommandError, SchedulerOutputError
from x2c.hosts.base import Completed, Runner
from x2c.jobenv import BASE

JobId = NewType("JobId", str)
"""A scheduler's own job identifier, as text (SLURM ``123``, LSF ``456``, PBS ``7.server``)."""


class JobState(enum.Enum):
    """Every scheduler's states folded onto one set; the native name is kept in
    :attr:`JobStatus.native`."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETING = "COMPLETING"
    SUSPENDED = "SUSPENDED"
    REQUEUED = "REQUEUED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    LOST = "LOST"
    """Left the queue and no exit marker appeared within the grace period."""
    UNKNOWN = "UNKNOWN"
    """A native state x2c does not know; never success, failed by the poller after a bound."""
    LEFT_QUEUE = "LEFT_QUEUE"
    """The scheduler no longer lists the job; the exit marker decides how it ended."""

    @property
    def is_final(self) -> bool:
        """True once the job can no longer change (UNKNOWN and LEFT_QUEUE are not final: the
        poller decides them)."""
        return self in _FINAL

    @property
    def is_success(self) -> bool:
        """True only for COMPLETED."""
        return self is JobState.COMPLETED


_FINAL = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.OUT_OF_MEMORY,
        JobState.NODE_FAIL,
        JobState.PREEMPTED,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
        JobState.LOST,
    }
)


@dataclass(frozen=True)
class JobStatus:
    """What a scheduler said about one job: the mapped state, its own word for it (``native``),
    a reason when it gave one, and the exit code when it knows it."""

    state: JobState
    native: str = ""
    reason: str = ""
    exit_code: int | None = None


@dataclass(frozen=True)
class FoundJob:
    """A job found again by its tag (:meth:`Scheduler.find`)."""

    job_id: JobId
    name: str
    tag: str
    status: JobStatus


@dataclass(frozen=True)
class JobSpec:
    """Everything a scheduler needs to queue one job whose script is already on the host.

    ``tag`` (pipeline, experiment and a run tag) goes into the scheduler's comment or name field so
    :meth:`Scheduler.find` can find the job after an orchestrator restart. ``walltime_s`` and
    ``mem_mb`` of 0 mean "the site default". Site options (partition, account, extra arguments)
    come from :class:`~x2c.config.SchedulerConfig`, not from here. ``env`` names the only
    variables submission passes on to the job (:func:`x2c.jobenv.job_env_names`: the basics
    plus the pipeline's ``passenv``); every backend passes these and nothing else (issue 9).
    """

    name: str
    script_path: str
    workdir: str
    stdout_path: str
    exit_marker: str
    tag: str = ""
    cpus: int = 1
    mem_mb: int = 0
    walltime_s: int = 0
    env: tuple[str, ...] = BASE
    array: int = 0
    """An array of this many tasks (0: one job); task ``i`` is job ``<id>_<i>``. Only where the
    scheduler :attr:`~Scheduler.arrays` (SLURM)."""
    array_throttle: int = 0
    """At most this many of the array's tasks at once (0: no limit of its own)."""


class Scheduler(ABC):
    """A batch system on one host, driven through a Runner. Subclasses implement four hooks;
    parsing and argv building live in module-level pure functions next to them."""

    kind: str = ""
    arrays: bool = False
    """Whether :meth:`submit` takes a :class:`JobSpec` with ``array`` set (one submission for
    many jobs)."""

    def __init__(self, runner: Runner, config: SchedulerConfig | None = None) -> None:
        self.runner = runner
        self.config = config or SchedulerConfig()

    @property
    def host(self) -> str:
        """The host's name, for messages and the poller registry."""
        return self.runner.name

    @property
    def max_array_size(self) -> int:
        """The most tasks one array may have here (1 where arrays are not supported)."""
        return 1

    @abstractmethod
    def submit(self, spec: JobSpec) -> JobId:
        """Queue one job; raises SubmissionError with the scheduler's words when it refuses."""

    @abstractmethod
    def poll(self, ids: Sequence[JobId]) -> dict[JobId, JobStatus]:
        """Ask about all ``ids`` in one scheduler call; a job the scheduler no longer lists is
        LEFT_QUEUE. Raises RemoteCommandError/SchedulerOutputError when the poll itself failed."""

    def observe(self, ids: Sequence[JobId]) -> dict[JobId, JobStatus]:
        """What :meth:`poll` says, without side effects (``x2c status`` only reads); the same
        call for every scheduler but the local one, whose poll also starts queued jobs."""
        return self.poll(ids)

    @abstractmethod
    def cancel(self, ids: Sequence[JobId]) -> None:
        """Cancel all ``ids`` in one call; jobs that already ended are ignored."""

    @abstractmethod
    def find(self, tag: str) -> list[FoundJob]:
        """Jobs still known to the scheduler whose tag (comment or name) equals ``tag``."""

    def _run(self, argv: list[str], what: str) -> Completed:
        """Run ``argv`` and require exit 0; otherwise a RemoteCommandError naming ``what``."""
        return self._require(self.runner.run(argv), argv, what)

    def _require(self, done: Completed, argv: list[str], what: str) -> Completed:
        """``done`` (the result of ``argv``) if it exited 0, else its RemoteCommandError."""
        if done.returncode != 0:
            raise RemoteCommandError(
                f"{what} failed on {self.host} (exit {done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}; check the scheduler is reachable",
                host=self.host,
                argv=argv,
                returncode=done.returncode,
                stderr=done.stderr,
            )
        return done


def absent(ids: Iterable[JobId], seen: dict[JobId, JobStatus]) -> dict[JobId, JobStatus]:
    """Complete ``seen`` with LEFT_QUEUE for every id the scheduler did not list."""
    out = dict(seen)
    for job_id in ids:
        out.setdefault(job_id, JobStatus(JobState.LEFT_QUEUE, reason="not listed by the scheduler"))
    return out


def walltime_hms(seconds: int) -> str:
    """``seconds`` as ``[D-]HH:MM:SS``, the format SLURM, PBS and SGE all accept for limits."""
    days, rest = divmod(max(0, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


def walltime_hours(seconds: int) -> str:
    """``seconds`` as ``HH:MM:SS`` with hours past 24 (PBS and LSF style limits)."""
    hours, rest = divmod(max(0, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def job_name(text: str, limit: int = 200) -> str:
    """A job name every scheduler accepts: letters, digits, ``._-`` only, starting with a letter
    (SGE rejects ``/:@\\*?``, PBS wants a leading letter), at most ``limit`` characters."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in text)
    if not cleaned[:1].isalpha():
        cleaned = "j" + cleaned
    return cleaned[:limit]


def parse_xml(text: str, what: str) -> ElementTree.Element:
    """Parse a scheduler's XML output, refusing any DTD (the only way to entity bombs)."""
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise SchedulerOutputError(f"{what} output carries a DTD; refusing to parse", output=text)
    try:
        return ElementTree.fromstring(text)  # noqa: S314 - no DTD, checked above
    except ElementTree.ParseError as exc:
        raise SchedulerOutputError(f"{what} printed malformed XML: {exc}", output=text) from exc
