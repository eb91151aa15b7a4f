"""IBM Spectrum LSF: ``bsub``, one ``bjobs -a -json -o ...`` for every job, ``bkill``.

``bjobs -a`` keeps finished jobs listed for ``CLEAN_PERIOD`` (an hour by default) with their exit
code and reason; after that the job is LEFT_QUEUE and the exit marker decides. The tag travels in
the job description (``-Jd``), the name in ``-J``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

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
)

log = logging.getLogger(__name__)

BJOBS_FIELDS = "jobid stat exit_code exit_reason job_name job_description pend_reason"

LSF_STATES: dict[str, JobState] = {
    "PEND": JobState.PENDING,
    "WAIT": JobState.PENDING,  # chunk job waiting for its chunk
    "PROV": JobState.PENDING,  # hosts being provisioned
    "PSUSP": JobState.SUSPENDED,  # suspended while pending
    "RUN": JobState.RUNNING,
    "USUSP": JobState.SUSPENDED,
    "SSUSP": JobState.SUSPENDED,
    "DONE": JobState.COMPLETED,
    "EXIT": JobState.FAILED,  # refined by the exit reason below
    "ZOMBI": JobState.CANCELLED,  # killed while its host was unreachable
    "UNKWN": JobState.UNKNOWN,  # mbatchd lost contact with the host; may come back
}

# TERM_* reasons (lsbatch.h) that say more than "it failed".
LSF_EXIT_REASONS: tuple[tuple[str, JobState], ...] = (
    ("TERM_RUNLIMIT", JobState.TIMEOUT),
    ("TERM_DEADLINE", JobState.DEADLINE),
    ("TERM_MEMLIMIT", JobState.OUT_OF_MEMORY),
    ("TERM_SWAP", JobState.OUT_OF_MEMORY),
    ("TERM_PREEMPT", JobState.PREEMPTED),
    ("TERM_OWNER", JobState.CANCELLED),
    ("TERM_ADMIN", JobState.CANCELLED),
    ("TERM_FORCE_OWNER", JobState.CANCELLED),
    ("TERM_FORCE_ADMIN", JobState.CANCELLED),
    ("TERM_HOST", JobState.NODE_FAIL),
)


def map_lsf_state(stat: str, exit_reason: str = "") -> JobState:
    """A bjobs STAT (and for EXIT, its exit reason) as a JobState."""
    state = LSF_STATES.get(stat, JobState.UNKNOWN)
    if state is JobState.FAILED:
        for term, refined in LSF_EXIT_REASONS:
            if term in exit_reason:
                return refined
    return state


def bsub_argv(spec: JobSpec, config: SchedulerConfig) -> list[str]:
    """The ``bsub`` argv for ``spec``; memory with an explicit unit, the run limit in minutes."""
    argv = ["bsub", "-J", job_name(spec.name), "-o", spec.stdout_path, "-cwd", spec.workdir]
    argv += ["-n", str(spec.cpus)]
    # bsub passes the whole submission environment unless -env names what to pass (issue 9)
    argv += ["-env", ",".join(spec.env)]
    if spec.tag:
        argv += ["-Jd", spec.tag]
    if spec.mem_mb:
        argv += ["-M", f"{spec.mem_mb}MB", "-R", f"rusage[mem={spec.mem_mb}MB]"]
    if spec.walltime_s:
        argv += ["-W", str(-(-spec.walltime_s // 60))]  # whole minutes, rounded up
    if config.partition:
        argv += ["-q", config.partition]
    if config.account:
        argv += ["-P", config.account]
    return [*argv, *config.extra_args, "/bin/bash", spec.script_path]


def parse_bsub_id(text: str) -> JobId:
    """The id in ``Job <1234> is submitted to queue <normal>.``"""
    match = re.search(r"Job <(\d+)> is submitted", text)
    if not match:
        raise SchedulerOutputError(f"bsub printed no job id: {text.strip()!r}", output=text)
    return JobId(match.group(1))


def parse_bjobs_json(text: str) -> dict[JobId, tuple[str, str, JobStatus]]:
    """``bjobs -json -o BJOBS_FIELDS`` as ``{id: (name, description, status)}``; records that
    only carry an ERROR (``Job <9> is not found``) are left out."""
    try:
        records: list[dict[str, Any]] = json.loads(text).get("RECORDS", [])
    except (json.JSONDecodeError, AttributeError) as exc:
        raise SchedulerOutputError(f"bjobs -json printed no JSON: {exc}", output=text) from exc
    out = {}
    for rec in records:
        if "ERROR" in rec or "STAT" not in rec:
            continue
        reason = rec.get("EXIT_REASON") or rec.get("PEND_REASON") or ""
        code = rec.get("EXIT_CODE", "")
        exit_code = int(code) if str(code).isdigit() else (0 if rec["STAT"] == "DONE" else None)
        state = map_lsf_state(rec["STAT"], reason)
        status = JobStatus(state, rec["STAT"], reason.strip(), exit_code)
        out[JobId(str(rec["JOBID"]))] = (
            rec.get("JOB_NAME", ""),
            rec.get("JOB_DESCRIPTION", ""),
            status,
        )
    return out


def is_unknown_job(stderr: str) -> bool:
    """bkill's words for a job that is gone or already over."""
    return "No matching job found" in stderr or "has already finished" in stderr


class LsfScheduler(Scheduler):
    """LSF through a Runner."""

    kind = "lsf"

    def submit(self, spec: JobSpec) -> JobId:
        argv = bsub_argv(spec, self.config)
        done = self.runner.run(argv)
        if done.returncode != 0:
            raise SubmissionError(
                f"bsub refused job {spec.name!r} on {self.host}: "
                f"{(done.stderr or done.stdout).strip()}; check queue, project and limits",
                stderr=done.stderr or done.stdout,
                argv=argv,
            )
        return parse_bsub_id(done.stdout)

    def _bjobs(self, ids: Sequence[str]) -> dict[JobId, tuple[str, str, JobStatus]]:
        argv = ["bjobs", "-a", "-json", "-o", BJOBS_FIELDS, *ids]
        done = self.runner.run(argv)
        # Unknown ids make bjobs exit non-zero but still print JSON with ERROR records.
        if done.returncode != 0 and not done.stdout.lstrip().startswith("{"):
            self._run(argv, "bjobs")
        return parse_bjobs_json(done.stdout)

    def poll(self, ids: Sequence[JobId]) -> dict[JobId, JobStatus]:
        if not ids:
            return {}
        listed = self._bjobs(ids)
        return absent(ids, {j: listed[j][2] for j in ids if j in listed})

    def cancel(self, ids: Sequence[JobId]) -> None:
        if ids:
            done = self.runner.run(["bkill", *ids])
            if done.returncode != 0 and not is_unknown_job(done.stderr):
                self._run(["bkill", *ids], "bkill")

    def find(self, tag: str) -> list[FoundJob]:
        return [
            FoundJob(j, name, desc, status)
            for j, (name, desc, status) in self._bjobs([]).items()
            if desc == tag
        ]
