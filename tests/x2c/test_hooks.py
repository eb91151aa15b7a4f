"""Hooks on Z (x2c.hooks): templating, quoting and the clean environment, run by a real bash."""

from __future__ import annotations

import subprocess

import pytest
from pydantic import ValidationError

from x2c.hooks import ON_DONE, ON_FAILED, HookFacts, Hooks, event_of, hook_command, hooks_for

HOSTILE = "S1; touch /tmp/x2c-hook-pwned $(id) `id` 'quote\" {project}\n*"
FACTS = HookFacts(
    project="P1",
    label=HOSTILE,
    experiment="XNAT_E00001",
    pipeline="demo",
    host="cluster",
    state="done",
    job_id="42",
    xnat_uri="http://xnat/data/experiments/XNAT_E00001/resources/DEMO",
)
BASE = {"PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8", "XNAT_PASS": "s3cret"}


def run_bash(command: str) -> subprocess.CompletedProcess[str]:
    """The command as prefect-shell runs it: written to a file and run by bash."""
    env = {**BASE, "X2C_XNAT_PASSWORD": "s3cret-too"}
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env)


def test_hook_hostile_label_is_one_quoted_argument() -> None:
    argv = ("printf", "<%s>\\n", "{label}", "{project}-{pipeline}", "{{literal}}")
    done = run_bash(hook_command(argv, FACTS, BASE))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"<{HOSTILE}>\n<P1-demo>\n<{{literal}}>\n"


def test_hook_environment_is_clean_and_carries_the_facts() -> None:
    done = run_bash(hook_command(("env",), FACTS, BASE))
    env = dict(line.split("=", 1) for line in done.stdout.split("\n") if "=" in line[:30])
    assert "s3cret" not in done.stdout
    assert {"PATH", "HOME", "LANG"} <= env.keys()
    assert not {"XNAT_PASS", "X2C_XNAT_PASSWORD"} & env.keys()
    assert env["X2C_JOB_ID"] == "42" and env["X2C_STATE"] == "done"
    assert env["X2C_XNAT_URI"] == FACTS.xnat_uri


@pytest.mark.parametrize(
    "hooks",
    [
        {"on_done": [["echo", "{password}"]]},
        {"on_done": [["echo", "{label!r}"]]},
        {"on_failed": [[]]},
        {"on_failed": [["A=1", "sh"]]},
        {"on_fail": [["true"]]},
    ],
)
def test_hook_bad_declarations_are_refused(hooks: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Hooks.model_validate(hooks)


@pytest.mark.parametrize(
    ("state", "action", "event"),
    [
        ("done", "collect", ON_DONE),
        ("failed", "ended", ON_FAILED),
        ("failed", "submit", ON_FAILED),
        ("done", "skip_done", None),
        ("failed", "report_failed", None),
        ("in_flight", "wait", None),
        ("skipped", "submit", None),
    ],
)
def test_hook_fires_once_per_ending(state: str, action: str, event: str | None) -> None:
    assert event_of(state, action) == event


def test_hook_order_pipeline_then_project() -> None:
    pipe = Hooks(on_done=(("a",),), on_failed=(("f",),))
    entry = Hooks(on_done=(("b",), ("c",)))
    assert hooks_for(ON_DONE, pipe, entry, None) == [("a",), ("b",), ("c",)]
    assert hooks_for(ON_FAILED, pipe, entry) == [("f",)]
