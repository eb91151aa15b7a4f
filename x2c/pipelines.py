"""Pipelines as data: a frozen :class:`Pipeline` model loaded from YAML or TOML.

A pipeline says which inputs it takes (:class:`~x2c.selection.InputSelection`), which image runs
it, the command as argv templates, the resources it needs, which outputs must exist, and how
they are packed and labelled on XNAT. The shipped pipelines live in ``x2c/pipelines/*.yaml``.

Command templates use placeholders substituted per argv element, never into a shell string:

``{subject}``, ``{experiment}``, ``{project}``
    XNAT labels, byte for byte;
``{inputs}``, ``{outputs}``
    the staged inputs and the output directory as the command sees them (container paths
    inside a container);
``{input}``
    the first staged input file whose name matches ``input_match``;
``{resume}``
    the earlier-results archive (only in steps with ``when: resume``);
``{cpus}``, ``{mem_mb}``
    the resources requested.

``{{`` and ``}}`` stand for literal braces.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from x2c.config import ContainerRuntime
from x2c.errors import PipelineError
from x2c.escalation import Escalation
from x2c.hooks import Hooks
from x2c.selection import InputSelection

PLACEHOLDERS = frozenset(
    {"subject", "experiment", "project", "inputs", "input", "outputs", "resume", "cpus", "mem_mb"}
)
_LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Output patterns are pasted into the job script as globs, so only these characters may appear.
_GLOB = re.compile(r"[A-Za-z0-9._/*?\[\]!-]+")
_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|CREDENTIAL|AUTH|API_?KEY|PRIVATE", re.IGNORECASE)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def template_fields(template: str) -> list[str]:
    """The placeholder names in ``template``; raises ValueError on unknown or complex ones."""
    names = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            raise ValueError(
                f"placeholder {{{field}}} in {template!r} is not one of "
                f"{', '.join(sorted(PLACEHOLDERS))} (write {{{{ and }}}} for literal braces)"
            )
        names.append(field)
    return names


class Step(_Frozen):
    """One command of a pipeline: an argv template and when it runs (``always``; ``fresh``
    when there is no earlier result to resume from; ``resume`` when there is)."""

    argv: tuple[str, ...] = Field(min_length=1)
    when: Literal["always", "fresh", "resume"] = "always"

    @field_validator("argv")
    @classmethod
    def _known_placeholders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for element in value:
            template_fields(element)
        return value

    @model_validator(mode="after")
    def _check_templates(self) -> Step:
        for element in self.argv:
            if "resume" in template_fields(element) and self.when != "resume":
                raise ValueError("{resume} may only appear in a step with when: resume")
        return self


class ResumeSpec(_Frozen):
    """An earlier result to start from: the experiment resource ``resource`` (e.g.
    ``FREESURFER6``), whose archive is unpacked into ``outputs/<into>`` before the steps run."""

    resource: str = Field(pattern=_LABEL)
    into: str = ""

    @field_validator("into")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value and (
            not _GLOB.fullmatch(value) or value.startswith("/") or ".." in value.split("/")
        ):
            raise ValueError(f"{value!r} must be a plain relative directory")
        if any(c in value for c in "*?[]!"):
            raise ValueError(f"{value!r} must not contain wildcards")
        return value


class PipelineBind(_Frozen):
    """A host path the pipeline needs besides its inputs (e.g. a licence file)."""

    src: str = Field(pattern=r"^/")
    dst: str = Field(pattern=r"^/")
    read_only: bool = True


class Pipeline(_Frozen):
    """One pipeline, as data; see the module docstring for the placeholders."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    version: str = Field(min_length=1)
    description: str = ""
    inputs: InputSelection
    input_match: str = Field(
        default="*",
        min_length=1,
        description="Shell-style pattern on file names choosing {input} among the staged files "
        "(e.g. '*.nii*' so a JSON sidecar is never taken for the image)",
    )
    image: str = Field(min_length=1)
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    runtime: ContainerRuntime | None = Field(
        default=None, description="Overrides the host's container runtime for this pipeline"
    )
    command: tuple[Step, ...] = Field(min_length=1)
    resume: ResumeSpec | None = None
    cpus: int = Field(default=1, ge=1, le=1024)
    mem_mb: int = Field(default=2048, ge=64)
    walltime: str = Field(default="01:00:00", pattern=r"^(\d+-)?\d{1,4}:[0-5]\d:[0-5]\d$")
    outputs: tuple[str, ...] = Field(min_length=1)
    archive: str = Field(pattern=_LABEL)
    archive_format: Literal["zip", "tar.gz"] = "zip"
    resource: str = Field(pattern=_LABEL, description="Result resource label on XNAT")
    env: tuple[tuple[str, str], ...] = Field(
        default=(), description="Non-secret environment; written as a mapping in files"
    )
    passenv: tuple[str, ...] = Field(
        default=(),
        description="Names of variables the job takes from the environment it starts in on the "
        "cluster (e.g. FS_LICENSE); besides these only PATH, HOME, LANG, TMPDIR, USER, LOGNAME "
        "and the scheduler's own variables reach it (x2c.jobenv)",
    )
    binds: tuple[PipelineBind, ...] = ()
    hooks: Hooks = Field(default=Hooks(), description="Commands run on Z after a job ends")
    escalation: Escalation | None = Field(
        default=None, description="Launch again bigger after OUT_OF_MEMORY or TIMEOUT"
    )

    @field_validator("command", mode="before")
    @classmethod
    def _one_argv_is_one_step(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            return [{"argv": list(value)}]
        return value

    @field_validator("outputs")
    @classmethod
    def _safe_globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if (
                not _GLOB.fullmatch(pattern)
                or pattern.startswith(("/", "-"))
                or ".." in pattern.split("/")
            ):
                raise ValueError(
                    f"output pattern {pattern!r} must be a relative glob under outputs/ made of "
                    "letters, digits, . _ - / * ? [ ] !"
                )
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _mapping_to_pairs(cls, value: Any) -> Any:
        # a tuple of pairs keeps the frozen model hashable; files write a mapping
        if isinstance(value, Mapping):
            return tuple(sorted((str(k), str(v)) for k, v in value.items()))
        return value

    @field_validator("env")
    @classmethod
    def _no_secrets(cls, value: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        for key, _ in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if _SECRET_NAME.search(key):
                raise ValueError(
                    f"{key!r} looks like a secret; pipeline files hold no secrets, and job "
                    "scripts never carry any"
                )
        return value

    @field_validator("passenv")
    @classmethod
    def _passenv_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not a valid environment variable name")
            if _SECRET_NAME.search(name):
                raise ValueError(
                    f"{name!r} looks like a secret; a job never receives secrets, so it may not "
                    "be passed on to one"
                )
        return value

    @model_validator(mode="after")
    def _resume_steps_need_resume(self) -> Pipeline:
        if any(s.when != "always" for s in self.command) and self.resume is None:
            raise ValueError("steps with when: fresh/resume need a resume: section")
        return self

    @property
    def environment(self) -> dict[str, str]:
        """``env`` as a mapping."""
        return dict(self.env)

    @property
    def archive_name(self) -> str:
        """The archive's file name, e.g. ``FS6_HIPPO.zip``."""
        return f"{self.archive}.{self.archive_format}"

    @property
    def walltime_seconds(self) -> int:
        """``walltime`` in seconds."""
        days, _, hms = self.walltime.rpartition("-")
        h, m, s = (int(x) for x in hms.split(":"))
        return (int(days) if days else 0) * 86400 + h * 3600 + m * 60 + s


def _describe(exc: ValidationError, source: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"pipeline {source}: field {loc}: {first['msg']}{more}"


def parse_pipeline(data: Mapping[str, Any], source: str = "<data>") -> Pipeline:
    """Validate ``data`` into a :class:`Pipeline`; errors name ``source`` and the field."""
    try:
        return Pipeline.model_validate(dict(data))
    except ValidationError as exc:
        raise PipelineError(_describe(exc, source)) from exc


def _parse_text(text: str, source: str) -> Pipeline:
    try:
        if source.endswith(".toml"):
            data: Any = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise PipelineError(f"pipeline {source}: not valid YAML/TOML: {exc}") from exc
    if not isinstance(data, dict):
        raise PipelineError(f"pipeline {source}: expected a mapping of fields at the top level")
    return parse_pipeline(data, source)


def load_pipeline(path: str | Path) -> Pipeline:
    """Load a pipeline from a ``.yaml``/``.yml`` or ``.toml`` file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"pipeline file {path} cannot be read: {exc.strerror}") from exc
    return _parse_text(text, str(path))


def builtin_pipelines() -> dict[str, Pipeline]:
    """The pipelines shipped with x2c, by name."""
    found: dict[str, Pipeline] = {}
    for entry in sorted(resources.files("x2c").joinpath("pipelines").iterdir(), key=str):
        if entry.name.endswith((".yaml", ".yml", ".toml")):
            pipeline = _parse_text(entry.read_text(encoding="utf-8"), f"x2c/pipelines/{entry.name}")
            found[pipeline.name] = pipeline
    return found


def builtin_pipeline(name: str) -> Pipeline:
    """The shipped pipeline called ``name``; the error lists the ones that exist."""
    pipelines = builtin_pipelines()
    try:
        return pipelines[name]
    except KeyError:
        raise PipelineError(
            f"no shipped pipeline called {name!r}; choose one of {', '.join(sorted(pipelines))} "
            "or load your own file"
        ) from None
