"""SLURM: ``sbatch --parsable`` to submit, one ``squeue`` for all live jobs, ``sacct`` for the ones
squeue no longer lists when the site keeps accounting, else the exit marker (read by the poller)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from x2c.config import SchedulerConfig
from x2c.errors import RemoteCommandError, SchedulerOutputError, SubmissionError
from x2c.hosts.base import Runner
from x2c.schedulers.base import (
    FoundJob,
    JobId,
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
    absent,
    walltime_hms,
)

log = logging.getLogger(__name__)

# Every state squeue(1) and sacct(1) document (JOB STATE CODES), SLURM 22.05 to 24.x.
SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,  # nodes allocated, still booting
    "RESV_DEL_HOLD": JobState.PENDING,  # held after its reservation was deleted
    "REQUEUE_FED": JobState.PENDING,  # requeued by a federation sibling
    "REQUEUE_HOLD": JobState.PENDING,  # requeued and held
    "REQUEUED": JobState.REQUEUED,
    "RUNNING": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETING": JobState.COMPLETING,
    "SIGNALING": JobState.COMPLETING,
    "STAGE_OUT": JobState.COMPLETING,
    "SUSPENDED": JobState.SUSPENDED,
    "STOPPED": JobState.SUSPENDED,  # SIGSTOPped, resources kept
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED,  # exited with the site's special exit value, then held
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,  # federation: a sibling ran it elsewhere
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.DEADLINE,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "NODE_FAIL": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.BOOT_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
}

SQUEUE_FORMAT = "%i|%T|%j|%k|%r"
"""id | state | name | comment | reason; the reason goes last because it may contain spaces."""


def map_slurm_state(native: str) -> JobState:
    """A SLURM state word (``CANCELLED by 0`` and ``COMPLETED+`` included) as a JobState;
    UNKNOWN for anything else."""
    word = native.strip().split(" ", 1)[0].rstrip("+")
    return SLURM_STATES.get(word, JobState.UNKNOWN)


def sbatch_argv(spec: JobSpec, config: SchedulerConfig) -> list[str]:
    """The ``sbatch`` argv for ``spec``; every value is its own element, nothing is quoted here."""
    argv = [
        "sbatch",
        "--parsable",
        f"--job-name={spec.name}",
        f"--output={spec.stdout_path}",
        f"--chdir={spec.workdir}",
        f"--cpus-per-task={spec.cpus}",
        # only these names and SLURM_* reach the job, never the submitter's whole environment
        # (sbatch(1) --export=<names>; the default ALL would pass XNAT_PASS on; issue 9)
        f"--export={','.join(spec.env)}",
    ]
    if spec.array:
        throttle = f"%{spec.array_throttle}" if spec.array_throttle else ""
        argv.append(f"--array=0-{spec.array - 1}{throttle}")
    if spec.tag:
        argv.append(f"--comment={spec.tag}")
    if spec.mem_mb:
        argv.append(f"--mem={spec.mem_mb}M")
    if spec.walltime_s:
        argv.append(f"--time={walltime_hms(spec.walltime_s)}")
    if config.partition:
        argv.append(f"--partition={config.partition}")
    if config.account:
        argv.append(f"--account={config.account}")
    argv += [*config.extra_args, spec.script_path]
    return argv


def parse_sbatch_id(text: str) -> JobId:
    """The job id from ``sbatch --parsable`` output (``123`` or ``123;cluster``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    head = lines[-1].split(";", 1)[0] if lines else ""
    if not head.isdigit():
        raise SchedulerOutputError(f"sbatch printed no job id: {text.strip()!r}", output=text)
    return JobId(head)


SQUEUE_ALL = ["squeue", "-h", "--array", "--states=all", f"--format={SQUEUE_FORMAT}"]
"""squeue with every array task on a line of its own (``123_4``, never ``123_[4-9]``)."""


def squeue_argv(ids: Sequence[JobId]) -> list[str]:
    """One squeue call for all ``ids`` (array tasks as ``123_4``), finished ones included."""
    return [*SQUEUE_ALL, "-j", ",".join(ids)]


DEFAULT_MAX_ARRAY_SIZE = 1001
"""SLURM's default ``MaxArraySize`` (slurm.conf(5)): task indices 0 to 1000."""


def parse_max_array_size(text: str) -> int:
    """``MaxArraySize`` from ``scontrol show config`` output (SLURM's default when absent)."""
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return DEFAULT_MAX_ARRAY_SIZE


def array_task(tag: str, index: int) -> str:
    """The tag of task ``index`` of the array tagged ``tag`` (what :meth:`SlurmScheduler.find`
    finds it by: the array's comment and the task's index)."""
    return f"{tag}@{index}"


def _matches(tag: str, job_id: str, comment: str, name: str) -> bool:
    base, at, index = tag.partition("@")
    if at:
        return base == comment and job_id.rpartition("_")[2] == index
    return tag in (comment, name)


def _split_squeue(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 4)
        if len(parts) != 5:
            raise SchedulerOutputError(f"unexpected squeue line: {line!r}", output=text)
        rows.append(parts)
    return rows


def parse_squeue(text: str) -> dict[JobId, JobStatus]:
    """``squeue --format=SQUEUE_FORMAT`` output as statuses by job id."""
    out: dict[JobId, JobStatus] = {}
    for job_id, native, _name, _comment, reason in _split_squeue(text):
        reason = "" if reason.strip() in ("None", "(null)") else reason.strip()
        out[JobId(job_id)] = JobStatus(map_slurm_state(native), native=native, reason=reason)
    return out


def parse_sacct(text: str) -> dict[JobId, JobStatus]:
    """``sacct -P -X --noheader --format=JobID,State,ExitCode,Reason`` output as statuses;
    the exit code is the first half of ``code:signal``."""
    out: dict[JobId, JobStatus] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 3)
        if len(parts) < 3:
            raise SchedulerOutputError(f"unexpected sacct line: {line!r}", output=text)
        job_id, native, code = parts[0], parts[1], parts[2]
        reason = parts[3].strip() if len(parts) > 3 and parts[3] != "None" else ""
        exit_code = int(code.split(":")[0]) if code.split(":")[0].isdigit() else None
        out[JobId(job_id)] = JobStatus(map_slurm_state(native), native, reason, exit_code)
    return out


def is_invalid_job_id(stderr: str) -> bool:
    """squeue fails outright when asked about ONE id it has purged (``slurm_load_jobs error:
    Invalid job id specified``); with several ids it filters and exits 0. Either way the job left
    the queue, so the poll did not fail."""
    return "Invalid job id specified" in stderr


class SlurmScheduler(Scheduler):
    """SLURM through a Runner. ``accounting`` is detected once (``sacct`` answers) unless given."""

    kind = "slurm"
    arrays = True

    def __init__(
        self, runner: Runner, config: SchedulerConfig | None = None, accounting: bool | None = None
    ) -> None:
        super().__init__(runner, config or SchedulerConfig(kind="slurm"))
        self._accounting = accounting
        self._max_array_size: int | None = None

    @property
    def max_array_size(self) -> int:
        """The cluster's ``MaxArraySize`` (``scontrol show config``, asked once): an array has
        at most this many tasks."""
        if self._max_array_size is None:
            try:
                done = self.runner.run(["scontrol", "show", "config"])
                text = done.stdout if done.returncode == 0 else ""
            except RemoteCommandError:
                text = ""
            self._max_array_size = parse_max_array_size(text)
            log.info("SLURM MaxArraySize on %s: %d", self.host, self._max_array_size)
        return self._max_array_size

    @property
    def accounting(self) -> bool:
        """Whether ``sacct`` works here (asked once, then remembered)."""
        if self._accounting is None:
            try:
                done = self.runner.run(["sacct", "-n", "-X", "-P", "--format=JobID", "-j", "1"])
                self._accounting = done.returncode == 0 and "disabled" not in done.stderr
            except RemoteCommandError:  # sacct not installed on this host
                self._accounting = False
            log.info("SLURM accounting on %s: %s", self.host, self._accounting)
        return self._accounting

    def submit(self, spec: JobSpec) -> JobId:
        argv = sbatch_argv(spec, self.config)
        done = self.runner.run(argv)
        if done.returncode != 0:
            raise SubmissionError(
                f"sbatch refused job {spec.name!r} on {self.host}: {done.stderr.strip()}; "
                "check partition, account and limits in the scheduler config",
                stderr=done.stderr,
                argv=argv,
            )
        job_id = parse_sbatch_id(done.stdout)
        log.info("submitted %s as SLURM job %s on %s", spec.name, job_id, self.host)
        return job_id

    def poll(self, ids: Sequence[JobId]) -> dict[JobId, JobStatus]:
        if not ids:
            return {}
        argv = squeue_argv(ids)
        done = self.runner.run(argv)
        if done.returncode != 0 and not is_invalid_job_id(done.stderr):
            done = self._run(argv, "squeue")  # raises with the details
        wanted = set(ids)
        seen = {k: v for k, v in parse_squeue(done.stdout).items() if k in wanted}
        gone = [j for j in ids if j not in seen]
        # squeue first: accounting can lag behind a fresh submission. sacct then tells how the
        # purged ones ended (with exit codes): at most two status calls whatever len(ids).
        if gone and self.accounting:
            argv = ["sacct", "-P", "-X", "--noheader", "--format=JobID,State,ExitCode,Reason"]
            done = self._run([*argv, "-j", ",".join(gone)], "sacct")
            seen.update({k: v for k, v in parse_sacct(done.stdout).items() if k in wanted})
        return absent(ids, seen)

    def cancel(self, ids: Sequence[JobId]) -> None:
        if ids:
            done = self.runner.run(["scancel", *ids])
            if done.returncode != 0 and not is_invalid_job_id(done.stderr):
                self._run(["scancel", *ids], "scancel")

    def find(self, tag: str) -> list[FoundJob]:
        done = self._run([*SQUEUE_ALL, "--me"], "squeue")
        found = []
        for job_id, native, name, comment, reason in _split_squeue(done.stdout):
            if _matches(tag, job_id, comment, name):
                status = JobStatus(map_slurm_state(native), native, reason.strip())
                found.append(FoundJob(JobId(job_id), name, comment, status))
        return found
