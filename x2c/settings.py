"""The one configuration file of an x2c installation: YAML, validated once, errors with the line.

A settings file names where XNAT is and how x2c logs in, the compute hosts, the pipelines, which
projects run which pipeline on which host, and the limits::

    xnat:
      url: https://xnat.example.org      # or  config: ~/xnat.cfg  (a pyxnat .cfg file)
      user: x2c                          # password from XNAT_PASS or ~/.netrc ...
      # secret_block: xnat-password      # ... or a Prefect Secret block, resolved by tasks/
    hosts:
      cluster:
        ssh: hpc-login                   # an ~/.ssh/config alias; omit for this machine
        workdir: /scratch/x2c
        scheduler: {kind: slurm, partition: short}
        container_runtime: apptainer
    pipelines: [freesurfer6-hippocampal, ./pipelines/my-pipeline.yaml]
    projects:
      - {project: ADNI, pipeline: freesurfer6-hippocampal, host: cluster}
    limits: {xnat_transfers: 4}
    state_dir: ~/.local/state/x2c        # on this machine (Z): the nightly ledger
    keep_workdir: false

:func:`load_settings` reads and validates it and raises :class:`~x2c.errors.ConfigError` with
the file, the line and the field (``x2c.yaml:12: hosts.cluster.scheduler.kind: must be one of
...``). Relative paths are taken from the settings file's directory. The XNAT password is never
in this file: :func:`xnat_config` builds the :class:`~x2c.config.XnatConfig` from the ``.cfg``
file, the environment, ``~/.netrc``, or a password the caller resolved from a Prefect Secret
block (x2c never imports Prefect). :func:`demo_settings` is the built-in configuration of
``x2c demo``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from x2c.config import ContainerRuntime, HostConfig, SchedulerConfig, XnatConfig
from x2c.containers import image_digest
from x2c.errors import ConfigError, PipelineError
from x2c.hooks import Hooks
from x2c.hosts.local import LocalRunner
from x2c.pipelines import Pipeline, builtin_pipeline, builtin_pipelines, load_pipeline
from x2c.xnat import load_xnat_config

log = logging.getLogger(__name__)

_PIPELINE_SUFFIXES = (".yaml", ".yml", ".toml")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class XnatSource(_Frozen):
    """Where XNAT is and where its password comes from; never the password itself.

    Exactly one of ``config`` (a pyxnat ``.cfg`` JSON file with server, user and password) or
    ``url`` (with ``user``; the password from ``XNAT_PASS``, ``~/.netrc`` or ``secret_block``).
    """

    config: Path | None = None
    url: str | None = Field(default=None, pattern=r"^https?://[^\s@/]+(/\S*)?$")
    user: str | None = None
    secret_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the password"
    )
    verify: bool | str = True
    timeout: float = Field(default=60.0, gt=0)
    retries: int = Field(default=4, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> XnatSource:
        if (self.config is None) == (self.url is None):
            raise ValueError("give either config (a pyxnat .cfg file) or url and user")
        if self.url is not None and not self.user:
            raise ValueError("url needs a user (the password comes from XNAT_PASS or ~/.netrc)")
        if self.config is not None and self.secret_block is not None:
            raise ValueError("secret_block goes with url and user, not with config")
        return self


class ProjectRun(_Frozen):
    """One line of ``projects``: run ``pipeline`` on ``host`` for every experiment of
    ``project``."""

    project: str = Field(min_length=1)
    pipeline: str = Field(min_length=1)
    host: str = Field(min_length=1)
    hooks: Hooks = Field(
        default=Hooks(), description="Commands run on Z after a job ends, after the pipeline's"
    )


class Limits(_Frozen):
    """Limits that hold across flow runs (Prefect global concurrency limits)."""

    xnat_transfers: int = Field(default=4, ge=1, description="Concurrent XNAT transfers")


class Settings(_Frozen):
    """A validated settings file. ``pipelines`` holds shipped names or absolute file paths;
    :meth:`pipeline` loads one. ``source`` is the file it came from (for messages)."""

    xnat: XnatSource
    hosts: dict[str, HostConfig] = Field(min_length=1)
    pipelines: tuple[str, ...] = ()
    projects: tuple[ProjectRun, ...] = ()
    limits: Limits = Limits()
    state_dir: Path
    keep_workdir: bool = False
    source: str = "<settings>"

    @field_validator("hosts", mode="before")
    @classmethod
    def _names_from_keys(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        out = {}
        for key, host in value.items():
            if isinstance(host, Mapping):
                if "name" in host and host["name"] != key:
                    raise ValueError(f"host {key!r} has name {host['name']!r}; leave name out")
                host = {**host, "name": key}
            out[key] = host
        return out

    def host(self, name: str) -> HostConfig:
        """The host called ``name``; the error lists the configured ones."""
        try:
            return self.hosts[name]
        except KeyError:
            raise ConfigError(
                f"{self.source}: no host called {name!r}; configured: "
                f"{', '.join(sorted(self.hosts))}"
            ) from None

    def pipeline(self, name: str) -> Pipeline:
        """The pipeline called ``name``: one of ``pipelines`` (a file's pipeline by its name) or,
        when ``pipelines`` is empty, a shipped one."""
        for ref in self.pipelines:
            if ref == name and not ref.endswith(_PIPELINE_SUFFIXES):
                return builtin_pipeline(ref)
            if ref.endswith(_PIPELINE_SUFFIXES):
                loaded = load_pipeline(ref)
                if loaded.name == name:
                    return loaded
        if not self.pipelines:
            return builtin_pipeline(name)
        raise ConfigError(
            f"{self.source}: pipeline {name!r} is not listed under pipelines "
            f"({', '.join(self.pipelines)})"
        )


# --- line numbers -------------------------------------------------------------------------


def _node_at(root: yaml.Node | None, loc: Sequence[int | str]) -> yaml.Node | None:
    """The deepest YAML node along ``loc`` (a pydantic error location)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if 0 <= part < len(node.value) else None
        else:
            child = None
        if child is None:
            return node
        node = child
    return node


def _where(source: str, root: yaml.Node | None, loc: Sequence[int | str]) -> str:
    node = _node_at(root, loc)
    line = f":{node.start_mark.line + 1}" if node is not None else ""
    field = ".".join(str(p) for p in loc) or "(top level)"
    return f"{source}{line}: {field}"


def _message(error: Mapping[str, Any]) -> str:
    msg = str(error["msg"])
    if error["type"] == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}"
    if error["type"] == "extra_forbidden":
        return "is not a known field (check its spelling)"
    if error["type"] == "missing":
        return "is required"
    return msg.removeprefix("Value error, ")


def _config_error(exc: ValidationError, source: str, root: yaml.Node | None) -> ConfigError:
    lines = []
    for error in exc.errors():
        loc = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        lines.append(f"{_where(source, root, loc)}: {_message(error)}")
    more = f" (and {len(lines) - 1} more: {'; '.join(lines[1:4])})" if len(lines) > 1 else ""
    return ConfigError(lines[0] + more)


# --- loading ------------------------------------------------------------------------------


def _resolve_paths(
    data: dict[str, Any], base: Path, home: Path | None, source: str
) -> dict[str, Any]:
    def resolve(value: Any) -> Any:
        if not isinstance(value, str) or not value:
            return value
        if value == "~" or value.startswith("~/"):
            if home is None:
                raise ConfigError(
                    f"{source}: {value!r} starts with ~ but no HOME was given; pass env= to "
                    "load_settings or write the full path"
                )
            value = str(home) + value[1:]
        path = Path(value)
        return str(path if path.is_absolute() else (base / path))

    out = dict(data)
    if isinstance(out.get("xnat"), Mapping) and "config" in out["xnat"]:
        out["xnat"] = {**out["xnat"], "config": resolve(out["xnat"]["config"])}
    if "state_dir" in out:
        out["state_dir"] = resolve(out["state_dir"])
    if isinstance(out.get("pipelines"), list):
        out["pipelines"] = [
            resolve(p) if isinstance(p, str) and p.endswith(_PIPELINE_SUFFIXES) else p
            for p in out["pipelines"]
        ]
    if isinstance(out.get("hosts"), Mapping):
        hosts = {}
        for name, host in out["hosts"].items():
            if isinstance(host, Mapping):
                host = dict(host)
                for key in ("ssh_config", "known_hosts"):
                    if key in host:
                        host[key] = resolve(host[key])
            hosts[name] = host
        out["hosts"] = hosts
    return out


def _check_references(settings: Settings, root: yaml.Node | None) -> None:
    """Host work directories are absolute, pipelines load, and every project names a known
    pipeline and host."""
    for name, host in settings.hosts.items():
        if not host.workdir.startswith("/"):
            raise ConfigError(
                f"{_where(settings.source, root, ('hosts', name, 'workdir'))}: "
                f"{host.workdir!r} must be an absolute path on the host"
            )
    names: dict[str, int] = {}
    for index, ref in enumerate(settings.pipelines):
        try:
            pipeline = load_pipeline(ref) if ref.endswith(_PIPELINE_SUFFIXES) else None
            if pipeline is None:
                pipeline = builtin_pipeline(ref)
        except PipelineError as exc:
            raise ConfigError(
                f"{_where(settings.source, root, ('pipelines', index))}: {exc}"
            ) from exc
        if pipeline.name in names:
            raise ConfigError(
                f"{_where(settings.source, root, ('pipelines', index))}: a second pipeline "
                f"called {pipeline.name!r}"
            )
        names[pipeline.name] = index
    known = set(names) if settings.pipelines else set(builtin_pipelines())
    for index, run in enumerate(settings.projects):
        if run.pipeline not in known:
            raise ConfigError(
                f"{_where(settings.source, root, ('projects', index, 'pipeline'))}: unknown "
                f"pipeline {run.pipeline!r}; choose one of {', '.join(sorted(known))}"
            )
        if run.host not in settings.hosts:
            raise ConfigError(
                f"{_where(settings.source, root, ('projects', index, 'host'))}: unknown host "
                f"{run.host!r}; configured: {', '.join(sorted(settings.hosts))}"
            )


def parse_settings(
    text: str, *, source: str = "<settings>", base_dir: Path | None = None, home: Path | None = None
) -> Settings:
    """Validate settings given as YAML ``text``; errors name ``source``, the line and the field.
    Relative paths are resolved against ``base_dir`` (default: the current directory) and
    ``~`` against ``home``."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{line}: not valid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: expected a mapping of settings at the top level")
    data = _resolve_paths(data, base_dir or Path.cwd(), home, source)
    data.setdefault("state_dir", str((base_dir or Path.cwd()) / ".x2c-state"))
    data["source"] = source
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, source, root) from exc
    _check_references(settings, root)
    return settings


_LOADED: dict[tuple[str, str], tuple[tuple[int, int], Settings]] = {}
_LOADED_LOCK = threading.Lock()


def load_settings(path: str | Path, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings file at ``path`` (YAML). ``env`` supplies ``HOME`` for
    ``~`` in paths (the caller passes ``os.environ``; nothing in x2c reads it).

    Loaded once per process: the validated settings are kept while the file's modification
    time and size stay the same, so every pass of a long-lived worker reads them from memory
    and still picks up an edited file at its next pass."""
    path = Path(path)
    home = Path(env["HOME"]) if env and env.get("HOME") else None
    if str(path).startswith("~") and home is not None:
        path = home / str(path)[2:]
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from exc
    key, stamp = (str(path.resolve()), str(home)), (stat.st_mtime_ns, stat.st_size)
    with _LOADED_LOCK:
        known = _LOADED.get(key)
    if known is not None and known[0] == stamp:
        return known[1]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from exc
    settings = parse_settings(text, source=str(path), base_dir=path.resolve().parent, home=home)
    with _LOADED_LOCK:
        _LOADED[key] = (stamp, settings)
    return settings


def xnat_config(
    settings: Settings,
    *,
    env: Mapping[str, str],
    password: SecretStr | None = None,
    netrc_path: Path | str | None = None,
) -> XnatConfig:
    """The :class:`XnatConfig` the settings describe, with the password from, in order:
    ``password`` (what tasks/ resolved from ``secret_block``), the ``.cfg`` file, ``XNAT_PASS``
    in ``env``, then ``~/.netrc``. Raises :class:`ConfigError` naming what is missing."""
    src = settings.xnat
    fields: dict[str, Any] = {"verify": src.verify, "timeout": src.timeout, "retries": src.retries}
    if src.config is not None:
        cfg = load_xnat_config(src.config, env={}, netrc_path=netrc_path, **fields)
        return cfg if password is None else cfg.model_copy(update={"password": password})
    assert src.url is not None and src.user is not None
    if password is not None:
        return XnatConfig(url=src.url, user=src.user, password=password, **fields)
    if src.secret_block is not None and not env.get("XNAT_PASS"):
        raise ConfigError(
            f"{settings.source}: xnat.secret_block {src.secret_block!r} holds the password; "
            "resolve it with Prefect and pass it as password=, or set XNAT_PASS"
        )
    sub_env = {"XNAT_HOST": src.url, "XNAT_USER": src.user}
    if env.get("XNAT_PASS"):
        sub_env["XNAT_PASS"] = env["XNAT_PASS"]
    return load_xnat_config(None, env=sub_env, netrc_path=netrc_path, **fields)


def demo_settings(
    *,
    xnat_url: str,
    xnat_user: str,
    workdir: str,
    state_dir: Path,
    project: str = "DEMO",
    runtime: ContainerRuntime | None = None,
    path_prepend: Sequence[str] | None = None,
    max_local_jobs: int = 2,
) -> Settings:
    """The configuration of ``x2c demo``: the local host, the local scheduler, the ``demo``
    pipeline for ``project``, in podman when it is installed with the demo image (see
    scripts/podman-setup.sh), else bare (``runtime none``). Bare jobs need a python3 with
    numpy, nibabel and x2c: ``path_prepend`` defaults to the directory of the running
    interpreter (this virtualenv's ``bin``) for them."""
    if runtime is None:
        runtime = "podman" if _demo_image_present() else "none"
    if path_prepend is None:
        path_prepend = (str(Path(sys.executable).parent),) if runtime == "none" else ()
    host = HostConfig(
        name="local",
        workdir=workdir,
        scheduler=SchedulerConfig(kind="local", max_local_jobs=max_local_jobs, poll_min_s=0.5),
        container_runtime=runtime,
        path_prepend=tuple(path_prepend),
    )
    return Settings(
        xnat=XnatSource(url=xnat_url, user=xnat_user),
        hosts={"local": host},
        pipelines=("demo",),
        projects=(ProjectRun(project=project, pipeline="demo", host="local"),),
        state_dir=state_dir,
        source="<demo settings>",
    )


def _demo_image_present() -> bool:
    if shutil.which("podman") is None:
        return False
    image = builtin_pipeline("demo").image
    return image_digest(LocalRunner(), "podman", image) is not None
