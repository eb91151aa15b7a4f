"""PBS: OpenPBS / PBS Professional (``qstat -x -f -F json``) and Torque (``qstat -x``, XML).

One ``qstat`` names every waiting job; ``-x`` keeps finished jobs visible while the server keeps
job history (PBS Pro ``job_history_enable``; Torque ``keep_completed``), and after that the job is
LEFT_QUEUE and the exit marker decides. The tag (sanitised) is the job name. PBS Pro has no
working-directory option: the job script must ``cd`` into its workdir (x2c's job scripts do).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

from x2c.config import SchedulerConfig
from x2c.errors import SchedulerOutputError, SubmissionError
from x2c.hosts.base import Runner
from x2c.schedulers.base import (
    FoundJob,
    JobId,
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
    absent,
    job_name,
    parse_xml,
    walltime_hours,
)

log = logging.getLogger(__name__)

Flavour = Literal["openpbs", "torque"]

PBS_STATES: dict[str, JobState] = {
    "Q": JobState.PENDING,  # queued
    "H": JobState.PENDING,  # held
    "W": JobState.PENDING,  # waiting for its start time
    "T": JobState.PENDING,  # in transit between servers
    "R": JobState.RUNNING,
    "B": JobState.RUNNING,  # array job begun
    "E": JobState.COMPLETING,  # exiting after having run
    "S": JobState.SUSPENDED,
    "U": JobState.SUSPENDED,  # suspended: workstation busy
    "M": JobState.LEFT_QUEUE,  # moved to another server: not ours to follow
}
FINISHED = {"F", "X", "C"}  # PBS Pro finished / finished subjob; Torque completed

# PBS Pro's negative Exit_status values for limits it enforced (JOB_EXEC_KILL_*).
PBS_KILLED = {
    -29: (JobState.TIMEOUT, "killed for exceeding its walltime"),
    -27: (JobState.OUT_OF_MEMORY, "killed for exceeding its memory"),
    -26: (JobState.OUT_OF_MEMORY, "killed for exceeding its virtual memory"),
    -25: (JobState.FAILED, "killed for exceeding its CPUs"),
}


def map_pbs_state(code: str, exit_status: int | None) -> JobStatus:
    """A job_state letter (and, once finished, its Exit_status) as a JobStatus."""
    if code not in FINISHED:
        return JobStatus(PBS_STATES.get(code, JobState.UNKNOWN), code)
    if exit_status is None:
        return JobStatus(JobState.LEFT_QUEUE, code, "finished without an exit status")
    if exit_status == 0:
        return JobStatus(JobState.COMPLETED, code, "", 0)
    if exit_status in PBS_KILLED:
        state, reason = PBS_KILLED[exit_status]
        return JobStatus(state, code, reason, exit_status)
    if exit_status < 0:
        return JobStatus(
            JobState.FAILED, code, f"PBS could not run it ({exit_status})", exit_status
        )
    if exit_status >= 256:  # 256 + signal: qdel, or a limit enforced by signal
        return JobStatus(JobState.CANCELLED, code, f"killed by signal {exit_status - 256}", None)
    return JobStatus(JobState.FAILED, code, f"exit code {exit_status}", exit_status)


def qsub_argv(spec: JobSpec, config: SchedulerConfig, flavour: Flavour = "openpbs") -> list[str]:
    """The ``qsub`` argv for ``spec``; resources in PBS Pro ``select`` or Torque ``nodes`` form."""
    argv = ["qsub", "-N", job_name(spec.tag or spec.name, 236), "-o", spec.stdout_path]
    argv += ["-j", "oe"]
    argv += ["-v", ",".join(spec.env)]  # only these from the submitter's environment (issue 9)
    mem = f":mem={spec.mem_mb}mb" if spec.mem_mb else ""
    if flavour == "torque":
        argv += ["-d", spec.workdir, "-l", f"nodes=1:ppn={spec.cpus}"]
        argv += ["-l", f"mem={spec.mem_mb}mb"] if spec.mem_mb else []
    else:
        argv += ["-l", f"select=1:ncpus={spec.cpus}{mem}"]
    if spec.walltime_s:
        argv += ["-l", f"walltime={walltime_hours(spec.walltime_s)}"]
    if config.partition:
        argv += ["-q", config.partition]
    if config.account:
        argv += ["-A", config.account]
    return [*argv, *config.extra_args, spec.script_path]


def parse_qsub_id(text: str) -> JobId:
    """The id qsub prints: ``1234.server`` (kept whole: qstat and qdel want it so)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[-1].split(".", 1)[0].split("[", 1)[0].isdigit():
        raise SchedulerOutputError(f"qsub printed no job id: {text.strip()!r}", output=text)
    return JobId(lines[-1])


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_qstat_json(text: str) -> dict[JobId, tuple[str, JobStatus]]:
    """PBS Pro ``qstat -x -f -F json`` as ``{id: (name, status)}``."""
    try:
        jobs = json.loads(text).get("Jobs", {}) if text.strip() else {}
    except (json.JSONDecodeError, AttributeError) as exc:
        raise SchedulerOutputError(f"qstat -F json printed no JSON: {exc}", output=text) from exc
    out = {}
    for job_id, attrs in jobs.items():
        status = map_pbs_state(attrs.get("job_state", ""), _int(attrs.get("Exit_status")))
        if attrs.get("comment") and not status.reason:
            status = JobStatus(status.state, status.native, attrs["comment"], status.exit_code)
        out[JobId(job_id)] = (attrs.get("Job_Name", ""), status)
    return out


def parse_qstat_torque_xml(text: str) -> dict[JobId, tuple[str, JobStatus]]:
    """Torque ``qstat -x`` (XML) as ``{id: (name, status)}``."""
    if not text.strip():
        return {}
    out = {}
    for job in parse_xml(text, "qstat -x").iter("Job"):
        job_id = (job.findtext("Job_Id") or "").strip()
        code = (job.findtext("job_state") or "").strip()
        status = map_pbs_state(code, _int(job.findtext("exit_status")))
        out[JobId(job_id)] = ((job.findtext("Job_Name") or "").strip(), status)
    return out


def is_unknown_job(stderr: str) -> bool:
    """qstat/qdel's words for jobs the server no longer knows or that already ended."""
    return "Unknown Job Id" in stderr or "Job has finished" in stderr


class PbsScheduler(Scheduler):
    """OpenPBS / PBS Professional, or Torque with ``flavour="torque"``, through a Runner."""

    kind = "pbs"

    def __init__(
        self, runner: Runner, config: SchedulerConfig | None = None, flavour: Flavour = "openpbs"
    ) -> None:
        super().__init__(runner, config)
        self.flavour = flavour

    def submit(self, spec: JobSpec) -> JobId:
        argv = qsub_argv(spec, self.config, self.flavour)
        done = self.runner.run(argv)
        if done.returncode != 0:
            raise SubmissionError(
                f"qsub refused job {spec.name!r} on {self.host}: {done.stderr.strip()}; "
                "check queue, account and resource requests in the scheduler config",
                stderr=done.stderr,
                argv=argv,
            )
        return parse_qsub_id(done.stdout)

    def _qstat(self, ids: Sequence[str]) -> dict[JobId, tuple[str, JobStatus]]:
        argv = (
            ["qstat", "-x", *ids]
            if self.flavour == "torque"
            else ["qstat", "-x", "-f", "-F", "json", *ids]
        )
        done = self.runner.run(argv)
        # Unknown ids are reported on stderr (exit 153) while the known ones still print.
        if done.returncode != 0 and not is_unknown_job(done.stderr):
            self._run(argv, "qstat")
        if self.flavour == "torque":
            return parse_qstat_torque_xml(done.stdout)
        return parse_qstat_json(done.stdout)

    def poll(self, ids: Sequence[JobId]) -> dict[JobId, JobStatus]:
        if not ids:
            return {}
        listed = self._qstat(ids)
        return absent(ids, {j: listed[j][1] for j in ids if j in listed})

    def cancel(self, ids: Sequence[JobId]) -> None:
        if ids:
            done = self.runner.run(["qdel", *ids])
            if done.returncode != 0 and not is_unknown_job(done.stderr):
                self._run(["qdel", *ids], "qdel")

    def find(self, tag: str) -> list[FoundJob]:
        wanted = job_name(tag, 236)
        listed = self._qstat([])
        return [FoundJob(j, n, tag, s) for j, (n, s) in listed.items() if n == wanted]
