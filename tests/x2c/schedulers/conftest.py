"""Helpers shared by the scheduler tests: a counting Runner and tiny hand-written job scripts."""

from __future__ import annotations

import shlex
import threading
from collections import Counter
from pathlib import Path

from x2c.hosts.base import Completed, Runner
from x2c.schedulers.base import JobSpec


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
    """A tiny bash job under ``directory/name`` that writes its exit code to the marker from an
    EXIT trap, then runs ``body``."""
    d = directory / name
    d.mkdir(parents=True)
    marker = d / "exit code"
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
        stdout_path=str(d / "job.log"),
        exit_marker=str(marker),
        tag=f"test-pipeline/{name}/run-{d.parent.name}",
        **spec,
    )


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
