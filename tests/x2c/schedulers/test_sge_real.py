"""SgeScheduler and the pass poller against the real one-node Grid Engine of the test cluster
(Debian gridengine 8.1.9, scripts/testcluster.sh), locally and through x2c's SSH runner."""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.cluster import Cluster
from tests.x2c.schedulers.conftest import CountingRunner
from x2c.config import HostConfig, SchedulerConfig
from x2c.errors import SubmissionError
from x2c.hosts import open_host
from x2c.hosts.base import Runner
from x2c.hosts.local import LocalRunner
from x2c.jobdir import JobDir, JobRecord
from x2c.poller import Watched, is_live, poll_jobs
from x2c.schedulers.base import JobId, JobSpec, JobState
from x2c.schedulers.sge import SgeScheduler

pytestmark = pytest.mark.cluster

CFG = SchedulerConfig(kind="sge", partition="all.q", exit_marker_grace_s=3)


def sge_job(base: Path, name: str, body: str, **spec: int) -> tuple[JobSpec, Watched]:
    """A tiny bash job in a job directory of x2c's layout whose EXIT trap writes the marker."""
    jobdir = JobDir(str(base / name))
    Path(jobdir.root).mkdir(parents=True)
    script = Path(jobdir.script)
    script.write_text(
        "#!/bin/bash\n"
        f"exec >{shlex.quote(jobdir.log)} 2>&1\n"
        f"marker={shlex.quote(jobdir.exit_code)}\n"
        "trap 'echo $? > \"$marker\"' EXIT\n"
        "trap 'exit 143' TERM\n"
        f"echo start {name} in $PWD\n"
        f"{body}\n"
    )
    script.chmod(0o755)
    spec = JobSpec(
        name=f"x2c-test-{name}",
        script_path=jobdir.script,
        workdir=jobdir.root,
        stdout_path=jobdir.scheduler_log,
        exit_marker=jobdir.exit_code,
        tag=f"test-pipeline/{name}/run-{base.name}",
        **spec,
    )
    record = JobRecord(
        job_id="",
        scheduler="sge",
        host="test",
        pipeline="test-pipeline",
        version="1",
        experiment=name,
        submitted_at=datetime.now(UTC),
        state=JobState.PENDING.value,
    )
    return spec, Watched(record, jobdir)


def until_ended(
    sched: SgeScheduler, jobs: dict[str, Watched], within: float = 90
) -> tuple[dict[str, JobRecord], int]:
    """Run passes (one poll_jobs each) until every job ended; the records and the pass count."""
    deadline = time.monotonic() + within
    pause = threading.Event()
    current = dict(jobs)
    passes = 0
    while any(is_live(w.record.state) for w in current.values()):
        assert time.monotonic() < deadline, {k: w.record for k, w in current.items()}
        passes += 1
        for key, record in poll_jobs(sched, current, time.time()).items():
            current[key] = Watched(record, current[key].jobdir)
        pause.wait(0.5)
    return {k: w.record for k, w in current.items()}, passes


class Submitted:
    def __init__(self, runner: Runner, base: Path) -> None:
        self.runner = CountingRunner(runner)
        self.sched = SgeScheduler(self.runner, CFG)
        self.base = base
        self.ids: list[JobId] = []

    def submit(self, name: str, body: str, **spec: int) -> tuple[str, Watched]:
        job_spec, watched = sge_job(self.base, name, body, **spec)
        job = self.sched.submit(job_spec)
        self.ids.append(job)
        record = watched.record.model_copy(update={"job_id": job})
        return job_spec.tag, Watched(record, watched.jobdir)


@pytest.fixture
def local_sge(sge: Cluster, tmp_path: Path) -> Iterator[Submitted]:
    s = Submitted(LocalRunner(), tmp_path / "sge jobs")
    yield s
    s.sched.cancel(s.ids)


def test_sge_jobs_end_by_their_markers_with_one_qstat_per_pass(local_sge: Submitted) -> None:
    jobs = {f"j{i}": local_sge.submit(f"many-{i}", f"exit {i % 2 * 3}")[1] for i in range(4)}
    jobs["smp"] = local_sge.submit("smp", "echo slots=$NSLOTS", cpus=2, mem_mb=200)[1]
    ended, passes = until_ended(local_sge.sched, jobs)
    assert [(r.state, r.exit_code) for k, r in ended.items() if k != "smp"] == [
        ("COMPLETED", 0),
        ("FAILED", 3),
    ] * 2
    assert ended["smp"].state == "COMPLETED"
    assert "slots=2" in Path(jobs["smp"].jobdir.log).read_text()  # -pe smp 2 was granted
    assert "start many-1" in ended["j1"].log_tail and "left the queue" in ended["j1"].reason
    assert local_sge.runner.counts["qstat"] == passes  # one status call per pass for all jobs


def test_sge_job_env_is_the_allow_list(local_sge: Submitted) -> None:
    _, watched = local_sge.submit("env", "env | sort")
    ended, _ = until_ended(local_sge.sched, {"env": watched})
    assert ended["env"].state == "COMPLETED"
    names = {line.split("=", 1)[0] for line in Path(watched.jobdir.log).read_text().splitlines()}
    assert "PATH" in names and "X2C_SECRET_CANARY" not in names


def test_sge_find_and_cancel(local_sge: Submitted) -> None:
    tag, watched = local_sge.submit("findable", "sleep 300")
    fresh = SgeScheduler(LocalRunner(), CFG)  # a restarted orchestrator knows only the tag
    found = fresh.find(tag)
    assert [f.job_id for f in found] == [watched.record.job_id]
    assert found[0].status.state in (JobState.PENDING, JobState.RUNNING)
    fresh.cancel([JobId(watched.record.job_id)])
    ended, _ = until_ended(fresh, {"findable": watched})
    # qdel kills with SIGKILL (no EXIT trap runs): a job seen in "dr" is CANCELLED, one gone
    # before a pass saw it is LOST after the marker grace; never a success
    assert ended["findable"].state in ("CANCELLED", "LOST"), ended
    deadline = time.monotonic() + 60  # "dr" lasts until the execution daemon reports the kill
    while fresh.find(tag):
        assert time.monotonic() < deadline, "qdel'ed job still listed after 60 s"
        threading.Event().wait(0.5)
    fresh.cancel([JobId(watched.record.job_id)])  # gone already: not an error


def test_sge_refusal_carries_its_words(sge: Cluster, tmp_path: Path) -> None:
    sched = SgeScheduler(LocalRunner(), CFG.model_copy(update={"partition": "no-such.q"}))
    spec, _ = sge_job(tmp_path, "refused", "true")
    with pytest.raises(SubmissionError, match=r'unknown queue "no-such\.q"') as err:
        sched.submit(spec)
    assert "no-such.q" in err.value.argv


def test_sge_over_ssh(sge: Cluster, tmp_path: Path) -> None:
    cfg = HostConfig(
        name="testcluster",
        ssh=sge.alias,
        ssh_config=sge.ssh_config,
        known_hosts=sge.known_hosts,
        workdir="/tmp",
    )
    with open_host(cfg) as host:
        s = Submitted(host.runner, tmp_path / "it's over ssh")
        try:
            jobs = {k: s.submit(k, body)[1] for k, body in (("ok", "true"), ("bad", "exit 5"))}
            ended, passes = until_ended(s.sched, jobs)
        finally:
            s.sched.cancel(s.ids)
    assert [(r.state, r.exit_code) for r in ended.values()] == [("COMPLETED", 0), ("FAILED", 5)]
    assert s.runner.counts["qstat"] == passes
