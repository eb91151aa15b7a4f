"""Settings at the command line's edge: load a settings file, build the seed form's settings
from its options, write them where the flows read them (the flows take a settings PATH), and
resolve the XNAT password into an :class:`XnatConfig`. ``x2c.settings`` is imported lazily so
``x2c --help`` stays fast."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from x2c.config import XnatConfig
from x2c.errors import ConfigError, X2CError

_PIPELINE_SUFFIXES = (".yaml", ".yml", ".toml")
VENV_BIN = str(Path(sys.executable).parent)
"""This virtualenv's ``bin``: bare jobs on this machine run its python (numpy, nibabel, x2c)."""


def home_of(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def load(path: str, env: Mapping[str, str]) -> Any:
    """The settings file at ``path``, validated; a missing one says how to name another."""
    from x2c.settings import load_settings

    if not Path(path).expanduser().exists():
        where = "" if Path(path).expanduser().is_absolute() else f" in {Path.cwd()}"
        raise ConfigError(
            f"cannot read settings file {path}: no such file{where}; give --settings FILE"
        )
    return load_settings(path, env=env)


def pipeline_ref(pipeline: str) -> tuple[str, str]:
    """(name, reference for ``pipelines:``) of a shipped pipeline name or a pipeline file."""
    if pipeline.endswith(_PIPELINE_SUFFIXES):
        from x2c.pipelines import load_pipeline

        path = str(Path(pipeline).resolve())
        return load_pipeline(path).name, path
    return pipeline, pipeline


def with_pipeline(listed: list[str], pipeline: str) -> tuple[list[str], str]:
    """``pipelines:`` with the seed form's ``--pipeline`` in it, and that pipeline's name. A
    file is added (the settings need not list it); a name one of the listed files defines is
    there already; any other name must be a shipped pipeline, added when the settings list
    others (an empty list already means every shipped one). Checked here, before XNAT is
    contacted, so a typo fails at once."""
    from x2c.pipelines import builtin_pipeline, load_pipeline

    try:
        name, ref = pipeline_ref(pipeline)
        if ref in listed:
            return listed, name
        if ref == name:
            files = [r for r in listed if r.endswith(_PIPELINE_SUFFIXES)]
            if any(load_pipeline(r).name == name for r in files):
                return listed, name
            builtin_pipeline(name)
            if not listed:
                return listed, name
        return [*listed, ref], name
    except X2CError as exc:
        raise ConfigError(f"--pipeline {pipeline}: {exc}") from exc


def seed_settings(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[Any, str]:
    """The settings the seed form describes, and the pipeline's name: ``--settings`` (if given)
    with ``--config``, ``--host``/``--output``, ``--scheduler``, ``--container-runtime`` and
    ``--keep`` laid over it."""
    from x2c.settings import Settings, XnatSource

    base: dict[str, Any] = {}
    if args.settings:
        loaded = load(args.settings, env)
        base = loaded.model_dump(mode="json", exclude={"source"})
    if args.config:
        cfg = Path(args.config).expanduser()
        if not cfg.is_file():
            raise ConfigError(f"--config {args.config}: no such file (a pyxnat .cfg, JSON)")
        base["xnat"] = XnatSource(config=cfg.resolve()).model_dump(mode="json")
    if "xnat" not in base:
        raise ConfigError("say where XNAT is: --config XNAT.cfg (pyxnat) or --settings x2c.yaml")
    hosts: dict[str, Any] = dict(base.get("hosts", {}))
    host = dict(hosts.get(args.host, {}))
    if not host:
        if not args.output:
            raise ConfigError(f"--host {args.host} is not in the settings: give --output DIR")
        local = args.host == "local"
        host = {
            "name": args.host,
            "ssh": None if local else args.host,
            "scheduler": {"kind": "local" if local else "slurm"},
            "container_runtime": "none" if local else "apptainer",
            # bare jobs on this machine use this virtualenv's python (numpy, nibabel, x2c)
            "path_prepend": [VENV_BIN] if local else [],
        }
    if args.output:
        host["workdir"] = args.output if args.host != "local" else str(Path(args.output).resolve())
    if args.scheduler:
        host["scheduler"] = {**host.get("scheduler", {}), "kind": args.scheduler}
    if args.container_runtime:
        host["container_runtime"] = args.container_runtime
    for key in ("ssh_config", "known_hosts"):
        value = getattr(args, key)
        if value:
            host[key] = str(Path(value).expanduser().resolve())
    hosts[args.host] = host
    base["hosts"] = hosts
    base["pipelines"], name = with_pipeline(list(base.get("pipelines", [])), args.pipeline)
    if args.keep:
        base["keep_workdir"] = True
    base.setdefault("state_dir", str(home_of(env) / ".x2c" / "state"))
    try:
        return Settings.model_validate({**base, "source": "<command line>"}), name
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()
        raise ConfigError(
            f"the command line's settings are not valid: {' '.join(first[:3])}"
        ) from exc


def write_settings(settings: Any, env: Mapping[str, str]) -> str:
    """Write ``settings`` to a file the flows can load (they take a settings PATH) and return
    it. Content-addressed under ``~/.x2c/settings/``; holds no password (only where it is)."""
    text = yaml.safe_dump(settings.model_dump(mode="json", exclude={"source"}), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = home_of(env) / ".x2c" / "settings"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.yaml"
    if not path.exists():
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text("# written by x2c from its command line\n" + text, encoding="utf-8")
        tmp.replace(path)
    load(str(path), env)  # what the flows will read must validate
    return str(path)


def xnat_config_of(settings: Any, env: Mapping[str, str]) -> XnatConfig:
    """The :class:`XnatConfig` the settings point at, password resolved here at the edge."""
    from x2c.settings import xnat_config

    password = None
    if settings.xnat.secret_block is not None:
        from tasks.runtime import secret_password  # a Prefect Secret block: Prefect needed

        password = secret_password(settings)
    return xnat_config(settings, env=env, password=password)
