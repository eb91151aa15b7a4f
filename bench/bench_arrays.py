"""Submitting k jobs to the real SLURM: one ``sbatch --array`` (what a pass does) vs one
``sbatch`` per job (the baseline, ``scheduler.arrays: false``), in the same run.

For each k, writes k tiny job directories and an index, then measures (a) the array: the index,
the array script and ONE sbatch, and (b) the baseline: k sbatch calls; both through the same
runner, counted. Prints sbatch calls, scheduler records and wall time, and their ratios, then
cancels every job it made.

    python bench/bench_arrays.py               # k = 30 and 300, through LocalRunner
    python bench/bench_arrays.py --ssh         # the same through x2c's SSH runner
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_poll import CFG, Counting
from x2c.hosts.base import Runner
from x2c.hosts.local import LocalRunner
from x2c.recipe.submit import array_script
from x2c.schedulers.base import JobId, JobSpec
from x2c.schedulers.slurm import SlurmScheduler


def _jobs(tmp: Path, k: int) -> list[JobSpec]:
    specs = []
    for i in range(k):
        d = tmp / f"job-{i}"
        d.mkdir()
        (d / "job.sh").write_text(f"#!/bin/bash\necho {shlex.quote(str(i))} > out\nsleep 600\n")
        specs.append(
            JobSpec(f"x2c-bench-{i}", str(d / "job.sh"), str(d), str(d / "log"), "", "bench")
        )
    return specs


def measure(runner: Counting, k: int) -> dict[str, float]:
    sched = SlurmScheduler(runner, CFG, accounting=False)
    made: list[JobId] = []
    with tempfile.TemporaryDirectory(prefix="x2c-bench-arrays-") as tmp:
        specs = _jobs(Path(tmp), k)
        try:
            runner.counts.clear()
            t0 = time.perf_counter()
            root = Path(tmp) / "array"
            root.mkdir()
            (root / "index").write_text("".join(f"{s.workdir}\n" for s in specs))
            (root / "array.sh").write_text(array_script(str(root / "index")))
            array = replace(
                specs[0], name="x2c-bench-array", script_path=str(root / "array.sh"),
                workdir=str(root), stdout_path=str(root / "%a.log"), array=k,
            )  # fmt: skip
            made.append(sched.submit(array))
            array_s = time.perf_counter() - t0
            array_calls = runner.counts["sbatch"]

            runner.counts.clear()
            t0 = time.perf_counter()
            made += [sched.submit(s) for s in specs]
            base_s = time.perf_counter() - t0
            base_calls = runner.counts["sbatch"]
        finally:
            sched.cancel(made)
    return {"array_calls": array_calls, "array_s": array_s, "base_calls": base_calls,
            "base_s": base_s}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[30, 300])
    parser.add_argument("--ssh", action="store_true", help="submit over SSH to the test cluster")
    args = parser.parse_args()
    inner: Runner = LocalRunner()
    if args.ssh:
        from tests.fixtures.cluster import STATE
        from x2c.config import HostConfig
        from x2c.hosts import open_host

        host = HostConfig(
            name="x2c-test", ssh="x2c-test", ssh_config=STATE / "ssh/ssh_config",
            known_hosts=STATE / "ssh/known_hosts", workdir="/tmp",
        )  # fmt: skip
        inner = open_host(host).runner
    print(f"runner: {inner.name}")
    print(f"{'jobs':>5} {'array sbatch':>13} {'array s':>8} {'base sbatch':>12} {'base s':>7} "
          f"{'calls ratio':>12} {'time ratio':>11}")  # fmt: skip
    for k in args.jobs:
        r = measure(Counting(inner), k)
        print(
            f"{k:>5} {r['array_calls']:>13.0f} {r['array_s']:>8.3f} {r['base_calls']:>12.0f} "
            f"{r['base_s']:>7.3f} {r['base_calls'] / r['array_calls']:>11.0f}x "
            f"{r['base_s'] / r['array_s']:>10.1f}x"
        )


if __name__ == "__main__":
    main()
