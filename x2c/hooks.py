"""Site commands run on Z after an experiment ends (issue 11): ``hooks`` of a pipeline or of a
``projects`` entry::

    hooks:
      on_done:   [[notify-send, "x2c: {label} done ({xnat_uri})"]]
      on_failed: [[/opt/site/ticket, --project, "{project}", --reason, "{reason}"]]

Each hook is an argv list whose elements are templates over the experiment's facts
(:data:`HOOK_FIELDS`). Prefect-shell's ``ShellOperation`` takes shell command *strings*, so
:func:`hook_command` formats every element and ``shlex.quote``s it (a label such as
``x; rm -rf ~`` stays one argument), and starts the hook with ``env -i``: the hook sees only
PATH, HOME and LANG from Z plus the facts as ``X2C_*`` variables, never the XNAT password or
anything else of the orchestrator's environment. Running them (and streaming their output into
the Prefect run's logs) is ``tasks/hooks.py``'s; a failing hook is reported beside the result
and never changes the experiment's state.
"""

from __future__ import annotations

import shlex
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # x2c.settings imports this module's Hooks
    from x2c.reconcile import Row
    from x2c.runtime import Runtime

HOOK_FIELDS = (
    "project",
    "label",
    "experiment",
    "pipeline",
    "host",
    "state",
    "job_id",
    "xnat_uri",
    "reason",
)
"""The facts a hook's argv may name as ``{field}``; each also reaches it as ``X2C_<FIELD>``."""

PASSED_ENV = ("PATH", "HOME", "LANG")
"""The only variables of Z's environment a hook inherits."""

ON_DONE = "on_done"
ON_FAILED = "on_failed"


def _check_template(argv: tuple[str, ...]) -> tuple[str, ...]:
    for element in argv:
        for _, name, spec, conversion in string.Formatter().parse(element):
            if name is not None and (name not in HOOK_FIELDS or spec or conversion):
                raise ValueError(
                    f"placeholder {{{name}}} in hook argument {element!r} is not one of "
                    f"{', '.join(HOOK_FIELDS)} (write {{{{ and }}}} for literal braces)"
                )
    return argv


class Hooks(BaseModel):
    """Commands to run on Z when an experiment's job ended done (``on_done``: its result is
    uploaded and verified) or failed (``on_failed``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    on_done: tuple[tuple[str, ...], ...] = Field(default=(), description="argv templates")
    on_failed: tuple[tuple[str, ...], ...] = Field(default=(), description="argv templates")

    @field_validator("on_done", "on_failed")
    @classmethod
    def _templates(cls, hooks: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, ...], ...]:
        for argv in hooks:
            if not argv or not argv[0] or "=" in argv[0]:
                raise ValueError("a hook is a non-empty argv list: [program, arg, ...] (no '=')")
            _check_template(argv)
        return hooks


@dataclass(frozen=True)
class HookFacts:
    """What a hook is told about the experiment; every field is one of :data:`HOOK_FIELDS`."""

    project: str
    label: str
    experiment: str
    pipeline: str
    host: str
    state: str
    job_id: str = ""
    xnat_uri: str = ""
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        """The facts by field name."""
        return {name: str(getattr(self, name)) for name in HOOK_FIELDS}


def event_of(state: str, action: str) -> str | None:
    """Which hooks a pass's row fires: ``on_done`` for a result uploaded in this pass (action
    ``collect``, state ``done``), ``on_failed`` for a job found ended badly (``ended``) or a
    launch that failed (``submit``) in this pass; None for everything else (a row reported again,
    waiting, skipped), so a hook runs once per ending, not once per pass."""
    if state == "done" and action == "collect":
        return ON_DONE
    if state == "failed" and action in ("ended", "submit"):
        return ON_FAILED
    return None


def hooks_for(event: str, *declared: Hooks | None) -> list[tuple[str, ...]]:
    """The argv templates of ``event`` from every ``declared`` hooks (pipeline's, then the
    projects entry's), in order."""
    out: list[tuple[str, ...]] = []
    for hooks in declared:
        if hooks is not None:
            out += hooks.on_done if event == ON_DONE else hooks.on_failed
    return out


def hook_command(argv: Sequence[str], facts: HookFacts, base_env: Mapping[str, str]) -> str:
    """The shell command string that runs ``argv`` (templates over ``facts``) with a clean
    environment: ``exec env -i`` with PATH/HOME/LANG taken from ``base_env`` (Z's, read by the
    caller) and ``X2C_<FIELD>`` for each fact. Every value is ``shlex.quote``d."""
    values = facts.as_dict()
    env = [f"{k}={base_env[k]}" for k in PASSED_ENV if k in base_env]
    env += [f"X2C_{k.upper()}={v}" for k, v in values.items()]
    words = [element.format_map(values) for element in _check_template(tuple(argv))]
    return " ".join(["exec", "env", "-i", *map(shlex.quote, env), *map(shlex.quote, words)])


@dataclass(frozen=True)
class HookRun:
    """One hook to run for a row: its argv template (for messages) and its shell command."""

    argv: tuple[str, ...]
    command: str


def hooks_of_row(rt: Runtime, row: Row, base_env: Mapping[str, str]) -> list[HookRun]:
    """The hooks ``row`` (one experiment after a pass) fires, as commands: the pipeline's, then
    those of every ``projects`` entry for the row's project, pipeline and host. Empty when the
    row did not end in this pass (:func:`event_of`)."""
    event = event_of(row.state, row.action)
    if event is None:
        return []
    entries = [
        p.hooks
        for p in rt.settings.projects
        if (p.project, p.pipeline, p.host) == (row.project, row.pipeline, row.host)
    ]
    facts = HookFacts(
        project=row.project,
        label=row.label,
        experiment=row.experiment,
        pipeline=row.pipeline,
        host=row.host,
        state=row.state,
        job_id=row.job_id,
        xnat_uri=row.xnat_uri,
        reason=row.reason,
    )
    templates = hooks_for(event, rt.pipeline(row.pipeline).hooks, *entries)
    return [HookRun(argv, hook_command(argv, facts, base_env)) for argv in templates]


def fires_hooks(rt: Runtime, row: Row) -> bool:
    """Whether ``row`` has any hook to run after this pass."""
    return bool(hooks_of_row(rt, row, {}))


def hook_failure(argv: Sequence[str], returncode: int | str) -> str:
    """How a failed hook is reported beside the result (appended to the row's reason)."""
    return f"hook {shlex.join(argv[:1])} exited {returncode}"
