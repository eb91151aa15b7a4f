"""Escalation after OUT_OF_MEMORY or TIMEOUT (x2c.escalation): the one rule, capped by the host,
bounded by max_escalations; and each backend's recorded way of saying "out of memory" reaching
it through the poller's judge."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.x2c.schedulers.conftest import DATA, ScriptedRunner
from x2c.config import HostConfig, SchedulerConfig
from x2c.escalation import Escalation, OnOom, OnTimeout, after, next_request
from x2c.jobdir import JobRecord, Request
from x2c.poller import judge
from x2c.schedulers.base import JobId, JobState, Scheduler
from x2c.schedulers.lsf import LsfScheduler
from x2c.schedulers.pbs import PbsScheduler
from x2c.schedulers.slurm import SlurmScheduler

RULE = Escalation(on_oom=OnOom(memory="2x"), on_timeout=OnTimeout(walltime="1.5x"))
HOST = HostConfig(workdir="/w", max_mem_mb=6000, max_walltime="02:00:00")


def ended(state: JobState, attempt: int = 1, mem: int = 2048, wall: int = 3600) -> JobRecord:
    return JobRecord(
        job_id="7",
        scheduler="slurm",
        host="hpc",
        pipeline="fs",
        version="1",
        experiment="E1",
        submitted_at=datetime.now(UTC),
        state=state.value,
        attempt=attempt,
        mem_mb=mem,
        walltime_s=wall,
        reason="killed",
    )


def test_escalate_oom_doubles_memory_and_timeout_stretches_walltime() -> None:
    assert next_request(RULE, HOST, ended(JobState.OUT_OF_MEMORY))[0] == Request(
        mem_mb=4096, walltime_s=3600
    )
    assert next_request(RULE, HOST, ended(JobState.TIMEOUT))[0] == Request(
        mem_mb=2048, walltime_s=5400
    )


def test_escalation_is_capped_by_the_host_and_stops_at_the_cap() -> None:
    assert next_request(RULE, HOST, ended(JobState.OUT_OF_MEMORY, mem=4000))[0] == Request(
        mem_mb=6000, walltime_s=3600
    )
    request, why = next_request(RULE, HOST, ended(JobState.OUT_OF_MEMORY, mem=6000))
    assert request is None and "max_mem_mb" in why
    request, why = next_request(RULE, HOST, ended(JobState.TIMEOUT, wall=7200))
    assert request is None and "max_walltime" in why


@pytest.mark.parametrize(
    ("rule", "record", "words"),
    [
        (RULE, ended(JobState.OUT_OF_MEMORY, attempt=2), "again after 1 escalation"),
        (RULE, ended(JobState.FAILED), ""),
        (RULE, ended(JobState.LOST), ""),
        (None, ended(JobState.TIMEOUT), ""),
        (Escalation(on_oom=OnOom()), ended(JobState.TIMEOUT), "no rule for it"),
    ],
)
def test_escalation_never_loops(rule: Escalation | None, record: JobRecord, words: str) -> None:
    request, why = next_request(rule, HOST, record)
    assert request is None and words in why


def test_escalated_record_keeps_the_attempt_in_its_history() -> None:
    first = ended(JobState.TIMEOUT)
    request, _ = next_request(RULE, HOST, first)
    assert request is not None
    record = after(first, request)
    assert record.escalate_to == request
    assert [(a.attempt, a.job_id, a.state, a.walltime_s) for a in record.history] == [
        (1, "7", "TIMEOUT", 3600)
    ]
    again = JobRecord.model_validate_json(record.model_dump_json())  # job.json round trip
    assert again == record


def _slurm() -> Scheduler:
    # the sacct line of tests/x2c/schedulers/test_slurm_parsing.py (SLURM's documented format)
    out = "105|OUT_OF_MEMORY|0:125|OutOfMemory\n"
    return SlurmScheduler(ScriptedRunner({"sacct": (0, out, ""), "squeue": (0, "", "")}))


def _lsf() -> Scheduler:
    out = (DATA / "lsf" / "bjobs.json").read_text()
    return LsfScheduler(ScriptedRunner({"bjobs": (0, out, "")}))


def _pbs() -> Scheduler:
    out = (DATA / "pbs" / "qstat_openpbs.json").read_text()
    return PbsScheduler(ScriptedRunner({"qstat": (0, out, "")}))


@pytest.mark.parametrize(("make", "job"), [(_slurm, "105"), (_lsf, "5146"), (_pbs, "1239.pbs01")])
def test_escalate_on_each_backends_recorded_oom(make: object, job: str) -> None:
    sched = make()  # type: ignore[operator]
    status = sched.poll([JobId(job)])[JobId(job)]
    assert status.state is JobState.OUT_OF_MEMORY, status
    record = judge(ended(JobState.RUNNING), status, None, 0.0, SchedulerConfig())
    assert record.state == "OUT_OF_MEMORY"
    assert next_request(RULE, HOST, record)[0] == Request(mem_mb=4096, walltime_s=3600)
