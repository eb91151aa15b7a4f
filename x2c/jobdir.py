"""The job directory on a compute host: where one pipeline run for one experiment lives.

This layout is a contract between the job script (which writes it on the node), the schedulers
and pollers (which read the exit marker) and the orchestrator (which stages inputs into it,
collects the archive from it and keeps the job registry entry in it)::

    <workdir>/<pipeline>/<experiment>/
      inputs/...      staged inputs, at the relative paths the XNAT selection chose
      job.sh          the rendered job script
      job.log         stdout and stderr of the job script (it redirects itself)
      scheduler.log   where the scheduler's own output option should point (sbatch --output):
                      the scheduler's messages, e.g. "CANCELLED", and anything before the
                      script's redirect; kept apart so it never overwrites job.log
      run.env         key=value lines the script writes: started_at, node, job_id, ended_at,
                      exit_code, archive_md5, archive_size
      exit_code       the script's exit status as decimal text, written last, atomically, by
                      the script's EXIT trap: its presence means "the job script has ended"
      outputs/        what the pipeline writes
      manifest.md5    md5sum lines of every packed output file, relative to outputs/
      <archive>       the packed result, e.g. FS6_HIPPO.zip
      job.json        the job registry entry (:class:`JobRecord`)
      inflight        the experiment's claim on one of the host's in-flight places
      finishing       a pass is collecting and uploading the result (:mod:`x2c.claims`)

Paths here are POSIX strings, not :class:`pathlib.Path`, because the host may be remote. The
``encode_*``/``decode_*`` functions turn the files' bytes into x2c types and back, for callers
that read and write through a :class:`~x2c.hosts.Host` (whose file methods translate a dropped
connection into :class:`~x2c.errors.SSHConnectError`); the ``read_*``/``write_*`` helpers do the
same over any fsspec filesystem and write atomically (a temporary name, then a rename).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from x2c.errors import PipelineError, TransferError
from x2c.paths import contained_relpath

log = logging.getLogger(__name__)

INPUTS = "inputs"
OUTPUTS = "outputs"
JOB_SCRIPT = "job.sh"
JOB_LOG = "job.log"
SCHEDULER_LOG = "scheduler.log"
EXIT_CODE = "exit_code"
RUN_INFO = "run.env"
MANIFEST = "manifest.md5"
REGISTRY = "job.json"
CLAIM = "inflight"
FINISHING = "finishing"

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_component(value: str) -> str:
    """Turn a label (pipeline name, experiment id) into one safe path component.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` and leading dots
    are dropped, so the result can never be ``..`` or contain ``/``. When anything changed, a
    short hash of the original is appended, so two different labels never share a directory.
    """
    if not value:
        raise PipelineError("an empty label cannot name a job directory; check the experiment id")
    cleaned = _UNSAFE.sub("_", value).lstrip(".")[:80]
    if cleaned == value:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{cleaned or 'x'}-{digest}"


def safe_relpath(relpath: str) -> str:
    """Check that ``relpath`` (a staged input or archive member) stays below its base directory;
    raises :class:`PipelineError` otherwise."""
    return contained_relpath(relpath, error=PipelineError, inside="the job directory")


@dataclass(frozen=True)
class JobDir:
    """The paths of one job directory; ``root`` is absolute on the compute host."""

    root: str

    @property
    def inputs(self) -> str:
        """Directory of the staged inputs."""
        return posixpath.join(self.root, INPUTS)

    @property
    def outputs(self) -> str:
        """Directory the pipeline writes to."""
        return posixpath.join(self.root, OUTPUTS)

    @property
    def script(self) -> str:
        """The rendered job script."""
        return posixpath.join(self.root, JOB_SCRIPT)

    @property
    def log(self) -> str:
        """stdout and stderr of the job script."""
        return posixpath.join(self.root, JOB_LOG)

    @property
    def scheduler_log(self) -> str:
        """Where the scheduler's own stdout/stderr option should point."""
        return posixpath.join(self.root, SCHEDULER_LOG)

    @property
    def exit_code(self) -> str:
        """The exit marker written by the script's EXIT trap."""
        return posixpath.join(self.root, EXIT_CODE)

    @property
    def run_info(self) -> str:
        """Start/end/node facts recorded by the script."""
        return posixpath.join(self.root, RUN_INFO)

    @property
    def manifest(self) -> str:
        """md5sum lines of the packed output files."""
        return posixpath.join(self.root, MANIFEST)

    @property
    def registry(self) -> str:
        """The job registry entry."""
        return posixpath.join(self.root, REGISTRY)

    def archive(self, name: str) -> str:
        """The packed result called ``name`` (e.g. ``FS6_HIPPO.zip``)."""
        return posixpath.join(self.root, safe_component(name))

    def input(self, relpath: str) -> str:
        """Where the staged input ``relpath`` lives; refuses paths that would escape inputs/."""
        return posixpath.join(self.inputs, safe_relpath(relpath))


def job_dir(workdir: str, pipeline: str, experiment: str) -> JobDir:
    """The job directory of ``pipeline`` for ``experiment`` under the host's ``workdir``.

    ``workdir`` must be absolute; both labels are passed through :func:`safe_component`.
    """
    if not workdir.startswith("/"):
        raise PipelineError(f"workdir {workdir!r} must be an absolute path on the host")
    root = posixpath.join(
        posixpath.normpath(workdir), safe_component(pipeline), safe_component(experiment)
    )
    return JobDir(root)


class Request(BaseModel):
    """The resources one attempt asked the scheduler for (0: the site default)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    mem_mb: int = 0
    walltime_s: int = 0


class Attempt(BaseModel):
    """One earlier attempt of a job (escalation, :mod:`x2c.escalation`): how it ended, with
    which resources."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    attempt: int
    job_id: str
    state: str
    mem_mb: int = 0
    walltime_s: int = 0
    reason: str = ""


class JobRecord(BaseModel):
    """The job registry entry kept in ``job.json``: how a restarted orchestrator finds a job.

    ``state`` is the last state the orchestrator saw (a ``JobState`` value, as text).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    job_id: str
    scheduler: str
    host: str
    pipeline: str
    version: str
    experiment: str
    submitted_at: datetime
    state: str
    project: str = ""
    subject: str = ""
    label: str = ""
    archive: str = ""
    tag: str = ""
    """The scheduler tag of the build that was (or is being) submitted: ``find(tag)``."""
    inputs_digest: str = ""
    """sha256 over the staged inputs' (path, size, md5): did the inputs change since?"""
    exit_code: int | None = None
    reason: str = ""
    """Why the job ended as it did (the scheduler's words or the exit marker's)."""
    log_tail: str = ""
    left_queue_at: float | None = None
    """When a pass first saw the job gone from the queue with no exit marker (epoch seconds on
    the orchestrator): it is LOST once the exit-marker grace has passed since."""
    unknown_since: float | None = None
    """When a pass first saw a state x2c does not know (epoch seconds): failed after a bound."""
    attempt: int = 1
    """1 for the first job of this build's experiment, +1 for each escalation."""
    mem_mb: int = 0
    """Memory this attempt asked for (MB; 0: the site default)."""
    walltime_s: int = 0
    """Walltime this attempt asked for (seconds; 0: the site default)."""
    history: tuple[Attempt, ...] = ()
    """The earlier attempts, oldest first."""
    uploads: int = 0
    """How many times the result was uploaded (a pass verifies each upload at the next pass,
    and gives up after :data:`x2c.reconcile.MAX_UPLOADS` that did not verify)."""
    escalate_to: Request | None = None
    """Set on an ended attempt that is launched again bigger: the next build's request."""


@dataclass(frozen=True)
class RunInfo:
    """What the job script recorded about its own run in ``run.env``; missing facts are None."""

    started_at: str | None = None
    ended_at: str | None = None
    node: str | None = None
    job_id: str | None = None
    exit_code: int | None = None
    archive_md5: str | None = None
    archive_size: int | None = None


def _atomic_write(fs: Any, path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(tmp, "wb") as fh:
            fh.write(data)
        fs.mv(tmp, path)
    except OSError as exc:
        raise TransferError(f"could not write {path}: {exc}; check the directory exists") from exc


def encode_record(record: JobRecord) -> bytes:
    """The content of ``job.json`` for ``record``."""
    return record.model_dump_json(indent=2).encode() + b"\n"


def decode_record(raw: bytes | None, jobdir: JobDir) -> JobRecord | None:
    """The registry entry read from ``jobdir``'s ``job.json`` (None: no file, no entry yet);
    raises :class:`PipelineError` when it is corrupt."""
    if raw is None:
        return None
    try:
        return JobRecord.model_validate_json(raw)
    except ValidationError as exc:
        raise PipelineError(
            f"job registry entry {jobdir.registry} is corrupt ({exc.error_count()} errors); "
            "inspect it, and remove it to let x2c resubmit"
        ) from exc


def write_record(fs: Any, jobdir: JobDir, record: JobRecord) -> None:
    """Write ``record`` to ``job.json`` atomically, replacing any earlier entry."""
    _atomic_write(fs, jobdir.registry, encode_record(record))


def read_record(fs: Any, jobdir: JobDir) -> JobRecord | None:
    """The registry entry in ``jobdir``, or None when there is none yet."""
    return decode_record(_read_bytes(fs, jobdir.registry), jobdir)


def _read_bytes(fs: Any, path: str) -> bytes | None:
    try:
        with fs.open(path, "rb") as fh:
            data: bytes = fh.read()
    except FileNotFoundError:
        return None
    return data


def parse_exit_code(text: str) -> int | None:
    """The exit status in an exit marker's text, or None when it is not a number."""
    stripped = text.strip()
    return int(stripped) if re.fullmatch(r"-?\d{1,4}", stripped) else None


def read_exit_code(fs: Any, jobdir: JobDir) -> int | None:
    """The job's exit status from its marker, or None while the script has not ended."""
    return decode_exit_code(_read_bytes(fs, jobdir.exit_code), jobdir)


def decode_exit_code(raw: bytes | None, jobdir: JobDir) -> int | None:
    """The exit status in ``jobdir``'s exit marker read as ``raw`` (None: no marker yet, or
    not a number, which is logged)."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    code = parse_exit_code(text)
    if code is None:
        log.warning("exit marker %s holds %r, not a number", jobdir.exit_code, text[:40])
    return code


def parse_run_info(text: str) -> RunInfo:
    """Parse ``run.env``: ``key=value`` lines; the last line of a key wins, unknown keys are
    ignored."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip()

    def _int(key: str) -> int | None:
        raw = values.get(key, "")
        return int(raw) if re.fullmatch(r"-?\d+", raw) else None

    return RunInfo(
        started_at=values.get("started_at") or None,
        ended_at=values.get("ended_at") or None,
        node=values.get("node") or None,
        job_id=values.get("job_id") or None,
        exit_code=_int("exit_code"),
        archive_md5=values.get("archive_md5") or None,
        archive_size=_int("archive_size"),
    )


def read_run_info(fs: Any, jobdir: JobDir) -> RunInfo | None:
    """What the job script recorded in ``run.env``, or None when it has not started."""
    return decode_run_info(_read_bytes(fs, jobdir.run_info))


def decode_run_info(raw: bytes | None) -> RunInfo | None:
    """``run.env`` read as ``raw`` (None: the job has not started)."""
    return None if raw is None else parse_run_info(raw.decode("utf-8", "replace"))


def write_text(fs: Any, path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (used for the job script)."""
    _atomic_write(fs, path, text.encode())
