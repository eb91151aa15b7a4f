"""Open the process-wide x2c runtime from a settings file PATH: the one place the XNAT password
is resolved (environment, ``~/.netrc``, the pyxnat ``.cfg``, or a Prefect Secret block).

Flow parameters carry the path, never a credential; the password goes from here into the
:class:`~x2c.config.XnatConfig` as a ``SecretStr`` and from there only into the HTTP client.
"""

from __future__ import annotations

import os

from prefect.blocks.system import Secret
from pydantic import SecretStr

from x2c import recipe
from x2c.errors import ConfigError
from x2c.recipe import Runtime
from x2c.settings import Settings, load_settings, xnat_config


def secret_password(settings: Settings) -> SecretStr | None:
    """The XNAT password from the settings' Prefect Secret block, when they name one."""
    name = settings.xnat.secret_block
    if name is None:
        return None
    try:
        block = Secret.load(name)
    except ValueError as exc:
        raise ConfigError(
            f"{settings.source}: xnat.secret_block {name!r}: no such Prefect Secret block; "
            f"create it with `prefect block create secret` (or in the UI) under that name"
        ) from exc
    value = block.get()  # type: ignore[union-attr]  # sync here, never a coroutine
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{settings.source}: Prefect Secret block {name!r} holds no password")
    return SecretStr(value)


def open_runtime(settings_path: str) -> Runtime:
    """The process-wide runtime for the settings at ``settings_path`` (loaded once per process
    and version of the file, :func:`~x2c.settings.load_settings`; the XNAT session, host
    connections and pollers are shared)."""
    settings = load_settings(settings_path, env=os.environ)
    cfg = xnat_config(settings, env=os.environ, password=secret_password(settings))
    return recipe.runtime(settings, cfg)
