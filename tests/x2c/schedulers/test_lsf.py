"""LSF argv builders and parsers, on samples written from the LSF 10.1 command reference."""

from __future__ import annotations

import pytest

from tests.x2c.schedulers.conftest import DATA, ScriptedRunner
from x2c.config import SchedulerConfig
from x2c.errors import SchedulerOutputError, SubmissionError
from x2c.schedulers.base import JobId, JobSpec, JobState
from x2c.schedulers.lsf import (
    LsfScheduler,
    bsub_argv,
    map_lsf_state,
    parse_bjobs_json,
    parse_bsub_id,
)

LSF = DATA / "lsf"
SPEC = JobSpec("fs6 E1", "/w/job.sh", "/w", "/w/log", "/w/exit", "fs6/E1/run-1", 2, 4000, 3601)
CFG = SchedulerConfig(kind="lsf", partition="normal", account="lab")


@pytest.mark.parametrize(
    ("stat", "reason", "state"),
    [
        ("PEND", "", JobState.PENDING),
        ("WAIT", "", JobState.PENDING),
        ("PROV", "", JobState.PENDING),
        ("PSUSP", "", JobState.SUSPENDED),
        ("RUN", "", JobState.RUNNING),
        ("USUSP", "", JobState.SUSPENDED),
        ("SSUSP", "", JobState.SUSPENDED),
        ("DONE", "", JobState.COMPLETED),
        ("EXIT", "", JobState.FAILED),
        ("EXIT", "TERM_RUNLIMIT: job killed after reaching LSF run time limit", JobState.TIMEOUT),
        ("EXIT", "TERM_DEADLINE: job killed after deadline expires", JobState.DEADLINE),
        ("EXIT", "TERM_MEMLIMIT: killed at the memory limit", JobState.OUT_OF_MEMORY),
        ("EXIT", "TERM_SWAP: job killed after reaching LSF swap usage", JobState.OUT_OF_MEMORY),
        ("EXIT", "TERM_PREEMPT: job killed after preemption", JobState.PREEMPTED),
        ("EXIT", "TERM_OWNER: job killed by owner", JobState.CANCELLED),
        ("EXIT", "TERM_ADMIN: job killed by root or LSF administrator", JobState.CANCELLED),
        ("EXIT", "TERM_FORCE_OWNER: job killed by owner without cleanup", JobState.CANCELLED),
        ("EXIT", "TERM_HOST: job killed by a command on its host", JobState.NODE_FAIL),
        ("ZOMBI", "", JobState.CANCELLED),
        ("UNKWN", "", JobState.UNKNOWN),
        ("NEW_STATE", "", JobState.UNKNOWN),
    ],
)  # fmt: skip
def test_every_lsf_state(stat: str, reason: str, state: JobState) -> None:
    assert map_lsf_state(stat, reason) is state


def test_parse_bjobs_json() -> None:
    parsed = parse_bjobs_json((LSF / "bjobs.json").read_text())
    states = {k: (v[2].state, v[2].exit_code) for k, v in parsed.items()}
    assert states == {
        "5140": (JobState.RUNNING, None),
        "5141": (JobState.PENDING, None),
        "5142": (JobState.COMPLETED, 0),
        "5143": (JobState.FAILED, 3),
        "5144": (JobState.TIMEOUT, 140),
        "5145": (JobState.CANCELLED, 130),
        "5146": (JobState.OUT_OF_MEMORY, 137),
        "5147": (JobState.SUSPENDED, None),
        "5148": (JobState.UNKNOWN, None),
        "5149": (JobState.SUSPENDED, None),
    }
    assert parsed[JobId("5141")][2].reason == "Job slot limit reached;"
    assert parsed[JobId("5140")][1] == "fs6-hippo/XNAT_E00001/run-7"


@pytest.mark.parametrize(
    ("name", "job_id"), [("bsub.txt", "5150"), ("bsub_default_queue.txt", "5151")]
)
def test_parse_bsub_id(name: str, job_id: str) -> None:
    assert parse_bsub_id((LSF / name).read_text()) == job_id


def test_garbage_is_an_output_error() -> None:
    with pytest.raises(SchedulerOutputError):
        parse_bsub_id("Request aborted by esub. Job not submitted.")
    with pytest.raises(SchedulerOutputError):
        parse_bjobs_json("No unfinished job found")


def test_bsub_argv() -> None:
    assert bsub_argv(SPEC, CFG) == [
        "bsub", "-J", "fs6_E1", "-o", "/w/log", "-cwd", "/w", "-n", "2",
        "-env", "PATH,HOME,LANG,TMPDIR,USER,LOGNAME",
        "-Jd", "fs6/E1/run-1", "-M", "4000MB", "-R", "rusage[mem=4000MB]", "-W", "61",
        "-q", "normal", "-P", "lab", "/bin/bash", "/w/job.sh",
    ]  # fmt: skip


def test_scheduler_through_a_scripted_runner() -> None:
    runner = ScriptedRunner(
        {
            "bsub": (0, (LSF / "bsub.txt").read_text(), ""),
            "bjobs": (255, (LSF / "bjobs.json").read_text(), ""),
            "bkill": (255, "", (LSF / "bkill_unknown.stderr").read_text()),
        }
    )
    sched = LsfScheduler(runner, CFG)
    assert sched.submit(SPEC) == "5150"
    polled = sched.poll([JobId("5143"), JobId("9999")])
    assert [s.state for s in polled.values()] == [JobState.FAILED, JobState.LEFT_QUEUE]
    sched.cancel([JobId("9999")])
    assert [f.job_id for f in sched.find("fs6-hippo/XNAT_E00004/run-7")] == ["5143"]
    refusing = LsfScheduler(
        ScriptedRunner({"bsub": (255, "", (LSF / "bsub_bad_queue.stderr").read_text())})
    )
    with pytest.raises(SubmissionError, match="No such queue"):
        refusing.submit(SPEC)
