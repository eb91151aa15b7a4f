"""(Son of / Open / Univa) Grid Engine: ``qsub -terse``, one ``qstat -xml`` for every job, ``qdel``.

Grid Engine forgets a job the moment it ends (``qacct`` needs accounting files on the login node),
so every finished job is LEFT_QUEUE here and its exit marker decides. Job names cannot carry
``/``, so the tag (sanitised) is the job name and :meth:`SgeScheduler.find` matches on it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from x2c.config import SchedulerConfig
from x2c.errors import SchedulerOutputError, SubmissionError
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
)

log = logging.getLogger(__name__)

# qstat(1) state letters combine ("Eqw", "hr", "dr"); the first rule that matches wins.
SGE_RULES: tuple[tuple[str, JobState], ...] = (
    ("d", JobState.CANCELLED),  # deletion requested (qdel): the job is going away
    ("E", JobState.FAILED),  # error state: stays queued until a person clears it
    ("z", JobState.LEFT_QUEUE),  # zombie (finished, only with -s z): the marker decides
    ("s", JobState.SUSPENDED),  # suspended by the user
    ("S", JobState.SUSPENDED),  # queue suspended
    ("T", JobState.SUSPENDED),  # suspend threshold of the queue reached
    ("r", JobState.RUNNING),
    ("t", JobState.RUNNING),  # being transferred to the execution host
    ("h", JobState.PENDING),  # held
    ("w", JobState.PENDING),  # waiting
    ("q", JobState.PENDING),  # queued ("Rq": restarted and queued again)
    ("R", JobState.RUNNING),  # restarted
)


def map_sge_state(code: str) -> JobState:
    """A qstat state code such as ``qw``, ``r``, ``Eqw`` or ``dr`` as a JobState."""
    for letter, state in SGE_RULES:
        if letter in code:
            return state
    return JobState.UNKNOWN


def qsub_argv(spec: JobSpec, config: SchedulerConfig) -> list[str]:
    """The ``qsub`` argv for ``spec``: stdout and stderr joined into ``stdout_path``."""
    argv = ["qsub", "-terse", "-N", job_name(spec.tag or spec.name), "-o", spec.stdout_path]
    argv += ["-j", "y", "-wd", spec.workdir, "-S", "/bin/bash"]
    argv += ["-v", ",".join(spec.env)]  # only these from the submitter's environment (issue 9)
    if spec.cpus > 1:
        argv += ["-pe", config.parallel_env, str(spec.cpus)]
    if spec.mem_mb:
        per_slot = -(-spec.mem_mb // max(1, spec.cpus))  # h_vmem is per slot; round up
        argv += ["-l", f"h_vmem={per_slot}M"]
    if spec.walltime_s:
        argv += ["-l", f"h_rt={spec.walltime_s}"]
    if config.partition:
        argv += ["-q", config.partition]
    if config.account:
        argv += ["-A", config.account]
    return [*argv, *config.extra_args, spec.script_path]


def parse_qsub_id(text: str) -> JobId:
    """The job id ``qsub -terse`` prints (``123``, or ``123.1-10:1`` for an array)."""
    head = text.strip().split(".", 1)[0]
    if not head.isdigit():
        raise SchedulerOutputError(f"qsub printed no job id: {text.strip()!r}", output=text)
    return JobId(head)


def parse_qstat_xml(text: str) -> dict[JobId, tuple[str, JobStatus]]:
    """``qstat -xml`` as ``{id: (name, status)}`` for running and pending jobs alike."""
    root = parse_xml(text, "qstat -xml")
    out: dict[JobId, tuple[str, JobStatus]] = {}
    for job in root.iter("job_list"):
        number = (job.findtext("JB_job_number") or "").strip()
        code = (job.findtext("state") or "").strip()
        if not number:
            raise SchedulerOutputError("qstat -xml job without JB_job_number", output=text)
        status = JobStatus(map_sge_state(code), code, job.get("state", ""))
        out.setdefault(JobId(number), ((job.findtext("JB_name") or "").strip(), status))
    return out


def is_unknown_job(output: str) -> bool:
    """qdel's words for a job it no longer knows (``denied: job "12" does not exist``); Grid
    Engine 8.1.9 prints them on stdout, not stderr (tests/data/sge/recorded)."""
    return "does not exist" in output


class SgeScheduler(Scheduler):
    """Grid Engine through a Runner."""

    kind = "sge"

    def submit(self, spec: JobSpec) -> JobId:
        argv = qsub_argv(spec, self.config)
        done = self.runner.run(argv)
        if done.returncode != 0:
            raise SubmissionError(
                f"qsub refused job {spec.name!r} on {self.host}: {done.stderr.strip()}; "
                "check queue, project and resource requests in the scheduler config",
                stderr=done.stderr,
                argv=argv,
            )
        return parse_qsub_id(done.stdout)

    def poll(self, ids: Sequence[JobId]) -> dict[JobId, JobStatus]:
        if not ids:
            return {}
        listed = parse_qstat_xml(self._run(["qstat", "-xml"], "qstat").stdout)
        return absent(ids, {j: listed[j][1] for j in ids if j in listed})

    def cancel(self, ids: Sequence[JobId]) -> None:
        if ids:
            argv = ["qdel", *ids]
            done = self.runner.run(argv)
            if not is_unknown_job(done.stdout + done.stderr):
                self._require(done, argv, "qdel")

    def find(self, tag: str) -> list[FoundJob]:
        listed = parse_qstat_xml(self._run(["qstat", "-xml"], "qstat").stdout)
        wanted = job_name(tag)
        return [FoundJob(j, n, tag, s) for j, (n, s) in listed.items() if n == wanted]
