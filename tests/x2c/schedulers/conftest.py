"""Helpers shared by the scheduler tests: a counting Runner, tiny hand-written job scripts laid
out as x2c job directories, and :func:`follow`, which polls jobs as passes do until they end."""

from __future__ import annotations

import shlex
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from x2c import jobdir as jd
from x2c.hosts.base import Completed, Runner
from x2c.poller import Watched, is_live, poll_jobs
from x2c.schedulers.base import JobId, JobSpec, Scheduler


class CountingRunner:
    """Wraps a Runner and counts the commands it runs, by program name."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        with self._lock:
            self.counts[argv[0]] += 1
            self.calls.append(list(argv))
        return self.inner.run(argv, input=input, timeout=timeout)


def job_script(directory: Path, name: str, body: str, **spec: int) -> JobSpec:
    """A tiny bash job under ``directory/name`` (laid out as an x2c job directory: marker
    ``exit_code``, log ``job.log``) that writes its exit code to the marker from an EXIT trap,
    then runs ``body``."""
    d = directory / name
    d.mkdir(parents=True)
    marker = d / jd.EXIT_CODE
    script = d / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        f"marker={shlex.quote(str(marker))}\n"
        "trap 'echo $? > \"$marker\"' EXIT\n"
        # bash runs the EXIT trap with $? = 0 when SIGTERM (scancel, time limit) kills it
        "trap 'exit 143' TERM\n"
        f"echo start {name}\n"
        f"{body}\n"
    )
    script.chmod(0o755)
    return JobSpec(
        name=f"x2c-test-{name}",
        script_path=str(script),
        workdir=str(d),
        stdout_path=str(d / jd.JOB_LOG),
        exit_marker=str(marker),
        tag=f"test-pipeline/{name}/run-{d.parent.name}",
        **spec,
    )


def watched(sched: Scheduler, job: JobId, spec: JobSpec) -> Watched:
    """A registry entry for ``job`` (submitted from ``spec``) as a pass would watch it."""
    record = jd.JobRecord(
        job_id=job,
        scheduler=sched.kind,
        host=sched.host,
        pipeline="test",
        version="1",
        experiment=spec.name,
        submitted_at=datetime.now(UTC),
        state="PENDING",
        tag=spec.tag,
    )
    return Watched(record, jd.JobDir(spec.workdir))


def follow(
    sched: Scheduler, jobs: Sequence[tuple[JobId, JobSpec]], timeout: float = 120.0
) -> tuple[list[jd.JobRecord], int]:
    """Poll ``jobs`` as passes do (:func:`x2c.poller.poll_jobs`, 0.2 s apart) until none is
    live; their final registry entries, in order, and how many polls that took."""
    current = {job: watched(sched, job, spec) for job, spec in jobs}
    polls = 0
    deadline = time.monotonic() + timeout
    while any(is_live(w.record.state) for w in current.values()):
        assert time.monotonic() < deadline, f"jobs still live after {timeout} s: {current}"
        if polls:
            time.sleep(0.2)
        polls += 1
        for key, record in poll_jobs(sched, current, time.time()).items():
            current[key] = Watched(record, current[key].jobdir)
    return [current[job].record for job, _ in jobs], polls


DATA = Path(__file__).resolve().parents[2] / "data"


class ScriptedRunner:
    """A fake at the Runner seam: answers each program with a recorded (rc, stdout, stderr)."""

    name = "scripted"

    def __init__(self, answers: dict[str, tuple[int, str, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        self.calls.append(list(argv))
        rc, out, err = self.answers[argv[0]]
        return Completed(tuple(argv), rc, out, err)
