"""The process-wide runtime cache: one Runtime per settings and XNAT configuration, replaced
once closed, keyed without ever holding the password in clear."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from tests.fixtures.xnat_data import xnat_config
from tests.x2c.helpers import local_host, make_settings
from x2c import recipe
from x2c.runtime import _runtime_key, close_runtimes, runtime


def test_runtime_is_shared_per_settings(xnat_server: Any, tmp_path: Path) -> None:
    settings = make_settings(xnat_server, tmp_path, local_host(tmp_path))
    try:
        first = recipe.runtime(settings, xnat_config(xnat_server))
        assert recipe.runtime(settings, xnat_config(xnat_server)) is first
        assert first.host("local") is first.host("local")
        assert first.scheduler("local") is first.scheduler("local")
        other = make_settings(xnat_server, tmp_path, local_host(tmp_path), keep_workdir=True)
        assert recipe.runtime(other, xnat_config(xnat_server)) is not first
    finally:
        recipe.close_runtimes()


def test_a_closed_runtime_is_replaced(xnat_server: Any, tmp_path: Path) -> None:
    settings = make_settings(xnat_server, tmp_path, local_host(tmp_path))
    try:
        first = runtime(settings, xnat_config(xnat_server))
        first.close()
        second = runtime(settings, xnat_config(xnat_server))
        assert second is not first
        assert runtime(settings, xnat_config(xnat_server)) is second
    finally:
        close_runtimes()
    assert runtime(settings, xnat_config(xnat_server)) is not second
    close_runtimes()


def test_the_key_tells_passwords_apart_without_holding_one(
    xnat_server: Any, tmp_path: Path
) -> None:
    settings = make_settings(xnat_server, tmp_path, local_host(tmp_path))
    cfg = xnat_config(xnat_server)
    other = cfg.model_copy(update={"password": SecretStr("another-secret")})
    key = _runtime_key(settings, cfg)
    assert key != _runtime_key(settings, other)
    assert xnat_server.password not in key and "another-secret" not in key
    rt = runtime(settings, cfg)
    try:
        assert xnat_server.password not in repr(rt)
    finally:
        close_runtimes()
