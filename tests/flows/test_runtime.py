"""The XNAT password from a Prefect Secret block."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect.blocks.system import Secret

from tasks.runtime import open_runtime
from x2c import recipe
from x2c.errors import ConfigError


@pytest.fixture
def runtimes() -> Iterator[None]:
    yield
    recipe.close_runtimes()


def test_the_password_comes_from_a_secret_block(tmp_path: Path, runtimes: None) -> None:
    settings = tmp_path / "x2c.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": "https://xnat.example.org", "user": "x2c", "secret_block": "xp"},
                "hosts": {"local": {"workdir": str(tmp_path / "work")}},
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    with pytest.raises(ConfigError, match="no such Prefect Secret block"):
        open_runtime(str(settings))
    Secret(value="s3cret-from-block").save("xp", overwrite=True)
    rt = open_runtime(str(settings))
    assert rt.xnat_config.password.get_secret_value() == "s3cret-from-block"
    assert "s3cret" not in repr(rt.xnat_config)
