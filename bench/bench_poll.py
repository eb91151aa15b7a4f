"""Scheduler status calls per pass: x2c's one poll per host vs one squeue per job.

Submits N sleeping jobs to the real SLURM (the test cluster), then for a few intervals measures
(a) x2c: one :func:`x2c.poller.poll_jobs` (what a pass does) = one ``squeue`` for all N jobs,
and
(b) the baseline: one ``squeue -h -j ID`` per job, as a naive per-job waiter would do.
Prints calls per interval, seconds per interval and the ratios, then cancels every job it made.

    python bench/bench_poll.py                 # N = 20 and 200, through LocalRunner
    python bench/bench_poll.py --ssh           # the same through x2c's SSH runner (test cluster)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from x2c.config import SchedulerConfig
from x2c.hosts.base import Completed, Runner
from x2c.hosts.local import LocalRunner
from x2c.jobdir import JobDir, JobRecord
from x2c.poller import Watched, poll_jobs
from x2c.schedulers.base import JobSpec, JobState
from x2c.schedulers.slurm import SQUEUE_FORMAT, SlurmScheduler

CFG = SchedulerConfig(kind="slurm", partition="debug", extra_args=("--oversubscribe",))


class Counting:
    """Counts a Runner's commands by program name."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.inner.name

    def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        with self.lock:
            self.counts[argv[0]] += 1
        return self.inner.run(argv, input=input, timeout=timeout)


def _spec(tmp: Path, i: int) -> JobSpec:
    d = tmp / f"job-{i}"
    d.mkdir()
    script = d / "job.sh"
    marker = shlex.quote(str(d / "exit"))
    script.write_text(f"#!/bin/bash\ntrap 'echo $? > {marker}' EXIT\nsleep 600\n")
    return JobSpec(f"x2c-bench-{i}", str(script), str(d), str(d / "log"), str(d / "exit"), "bench")


def measure(runner: Counting, n: int, intervals: int) -> dict[str, float]:
    sched = SlurmScheduler(runner, CFG, accounting=False)
    with tempfile.TemporaryDirectory(prefix="x2c-bench-") as tmp:
        ids = [sched.submit(_spec(Path(tmp), i)) for i in range(n)]
        try:
            now = datetime.now(UTC)
            watched = {
                job: Watched(
                    JobRecord(
                        job_id=job, scheduler="slurm", host=runner.name, pipeline="bench",
                        version="1", experiment=job, submitted_at=now, state="PENDING",
                    ),
                    JobDir(str(Path(tmp) / f"job-{i}")),
                )
                for i, job in enumerate(ids)
            }  # fmt: skip
            runner.counts.clear()
            t0 = time.perf_counter()
            for _ in range(intervals):
                changed = poll_jobs(sched, watched, time.time())
            x2c_s = (time.perf_counter() - t0) / intervals
            x2c_calls = sum(runner.counts.values()) / intervals
            seen = {r.state for r in changed.values()} | {"PENDING"}
            assert seen <= {JobState.PENDING.value, JobState.RUNNING.value}, seen

            runner.counts.clear()
            t0 = time.perf_counter()
            for _ in range(intervals):
                for job in ids:
                    runner.run(["squeue", "-h", "-j", job, f"--format={SQUEUE_FORMAT}"])
            base_s = (time.perf_counter() - t0) / intervals
            base_calls = sum(runner.counts.values()) / intervals
        finally:
            sched.cancel(ids)
    return {"x2c_calls": x2c_calls, "x2c_s": x2c_s, "base_calls": base_calls, "base_s": base_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--intervals", type=int, default=3)
    parser.add_argument("--ssh", action="store_true", help="poll over SSH to the test cluster")
    args = parser.parse_args()
    inner: Runner = LocalRunner()
    if args.ssh:
        from tests.fixtures.cluster import STATE  # the test cluster's ssh_config
        from x2c.config import HostConfig
        from x2c.hosts import open_host

        host = HostConfig(
            name="x2c-test",
            ssh="x2c-test",
            ssh_config=STATE / "ssh/ssh_config",
            known_hosts=STATE / "ssh/known_hosts",
            workdir="/tmp",
        )
        inner = open_host(host).runner
    print(f"runner: {inner.name}; {args.intervals} intervals per size")
    print(f"{'jobs':>5} {'x2c calls/int':>14} {'x2c s/int':>10} {'base calls/int':>15} "
          f"{'base s/int':>11} {'calls ratio':>12} {'time ratio':>11}")  # fmt: skip
    for n in args.jobs:
        r = measure(Counting(inner), n, args.intervals)
        print(
            f"{n:>5} {r['x2c_calls']:>14.0f} {r['x2c_s']:>10.3f} {r['base_calls']:>15.0f} "
            f"{r['base_s']:>11.3f} {r['base_calls'] / r['x2c_calls']:>11.0f}x "
            f"{r['base_s'] / r['x2c_s']:>10.1f}x"
        )


if __name__ == "__main__":
    main()
