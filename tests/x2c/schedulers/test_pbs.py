"""PBS (OpenPBS/PBS Pro and Torque) argv builders and parsers, on documented samples."""

from __future__ import annotations

import pytest

from tests.x2c.schedulers.conftest import DATA, ScriptedRunner
from x2c.config import SchedulerConfig
from x2c.errors import SchedulerOutputError, SubmissionError
from x2c.schedulers.base import JobId, JobSpec, JobState
from x2c.schedulers.pbs import (
    PbsScheduler,
    map_pbs_state,
    parse_qstat_json,
    parse_qstat_torque_xml,
    parse_qsub_id,
    qsub_argv,
)

PBS = DATA / "pbs"
SPEC = JobSpec("fs6", "/w/job.sh", "/w", "/w/log", "/w/exit", "fs6/E1/run-1", 4, 8000, 90061)
CFG = SchedulerConfig(kind="pbs", partition="workq", account="lab")


@pytest.mark.parametrize(
    ("code", "exit_status", "state"),
    [
        ("Q", None, JobState.PENDING),
        ("H", None, JobState.PENDING),
        ("W", None, JobState.PENDING),
        ("T", None, JobState.PENDING),
        ("R", None, JobState.RUNNING),
        ("B", None, JobState.RUNNING),
        ("E", None, JobState.COMPLETING),
        ("S", None, JobState.SUSPENDED),
        ("U", None, JobState.SUSPENDED),
        ("M", None, JobState.LEFT_QUEUE),
        ("F", 0, JobState.COMPLETED),
        ("X", 0, JobState.COMPLETED),
        ("C", 0, JobState.COMPLETED),
        ("F", 3, JobState.FAILED),
        ("F", -29, JobState.TIMEOUT),
        ("F", -27, JobState.OUT_OF_MEMORY),
        ("F", -26, JobState.OUT_OF_MEMORY),
        ("F", -25, JobState.FAILED),
        ("F", -1, JobState.FAILED),
        ("F", 271, JobState.CANCELLED),
        ("F", None, JobState.LEFT_QUEUE),
        ("Z", None, JobState.UNKNOWN),
    ],
)
def test_every_pbs_state(code: str, exit_status: int | None, state: JobState) -> None:
    assert map_pbs_state(code, exit_status).state is state


def test_parse_openpbs_json() -> None:
    parsed = parse_qstat_json((PBS / "qstat_openpbs.json").read_text())
    states = {k: (v[1].state, v[1].exit_code) for k, v in parsed.items()}
    assert states == {
        "1230.pbs01": (JobState.RUNNING, None),
        "1231.pbs01": (JobState.PENDING, None),
        "1232.pbs01": (JobState.PENDING, None),
        "1233.pbs01": (JobState.COMPLETED, 0),
        "1234.pbs01": (JobState.FAILED, 3),
        "1235.pbs01": (JobState.TIMEOUT, -29),
        "1236.pbs01": (JobState.CANCELLED, None),
        "1237.pbs01": (JobState.COMPLETING, None),
        "1238.pbs01": (JobState.SUSPENDED, None),
        "1239.pbs01": (JobState.OUT_OF_MEMORY, -27),
    }
    assert "Insufficient amount of resource" in parsed[JobId("1231.pbs01")][1].reason


def test_parse_torque_xml() -> None:
    parsed = parse_qstat_torque_xml((PBS / "qstat_torque.xml").read_text())
    assert {k: v[1].state for k, v in parsed.items()} == {
        "881.torque01": JobState.COMPLETED,
        "882.torque01": JobState.FAILED,
        "883.torque01": JobState.RUNNING,
        "884.torque01": JobState.PENDING,
    }


def test_parse_garbage() -> None:
    with pytest.raises(SchedulerOutputError):
        parse_qstat_json("qstat: illegal -F")
    with pytest.raises(SchedulerOutputError):
        parse_qsub_id("qsub: Unknown queue")
    assert parse_qsub_id((PBS / "qsub.txt").read_text()) == "1234.pbs01"


def test_qsub_argv_both_flavours() -> None:
    assert qsub_argv(SPEC, CFG) == [
        "qsub", "-N", "fs6_E1_run-1", "-o", "/w/log", "-j", "oe",
        "-v", "PATH,HOME,LANG,TMPDIR,USER,LOGNAME",
        "-l", "select=1:ncpus=4:mem=8000mb", "-l", "walltime=25:01:01",
        "-q", "workq", "-A", "lab", "/w/job.sh",
    ]  # fmt: skip
    torque = qsub_argv(SPEC, CFG, "torque")
    assert torque[9:15] == ["-d", "/w", "-l", "nodes=1:ppn=4", "-l", "mem=8000mb"]


def test_unknown_ids_do_not_fail_the_poll() -> None:
    runner = ScriptedRunner(
        {
            "qstat": (153, (PBS / "qstat_openpbs.json").read_text(), "qstat: Unknown Job Id 9.x\n"),
            "qdel": (153, "", (PBS / "qdel_unknown.stderr").read_text()),
            "qsub": (168, "", (PBS / "qsub_bad_queue.stderr").read_text()),
        }
    )  # fmt: skip
    sched = PbsScheduler(runner, CFG)
    polled = sched.poll([JobId("1234.pbs01"), JobId("9.pbs01")])
    assert [s.state for s in polled.values()] == [JobState.FAILED, JobState.LEFT_QUEUE]
    assert len(runner.calls) == 1 and runner.calls[0][-2:] == ["1234.pbs01", "9.pbs01"]
    sched.cancel([JobId("9.pbs01")])
    with pytest.raises(SubmissionError, match="Unknown queue"):
        sched.submit(SPEC)
    assert [f.job_id for f in sched.find("fs6-hippo/XNAT_E00004/run-7")] == ["1233.pbs01"]
