"""Retries as Prefect runs them, and the XNAT password from a Prefect Secret block."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect import flow, task
from prefect.blocks.system import Secret

from tasks.common import retry_transient
from tasks.runtime import open_runtime
from x2c import recipe
from x2c.errors import ConfigError, JobFailedError, SSHConnectError

attempts: dict[str, int] = {}


@task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_transient)
def flaky(kind: str) -> str:
    attempts[kind] = attempts.get(kind, 0) + 1
    if kind == "transient" and attempts[kind] < 3:
        raise SSHConnectError("connection lost", host="hpc")
    if kind == "job":
        raise JobFailedError("job 7 failed", job_id="7", state="FAILED", exit_code=3)
    return "ok"


@flow
def two_kinds() -> tuple[str, str]:
    transient = flaky("transient")
    job = flaky("job", return_state=True)
    return transient, str(job.type.value)


def test_transient_errors_are_retried_and_failed_jobs_are_not() -> None:
    attempts.clear()
    assert two_kinds() == ("ok", "FAILED")
    assert attempts == {"transient": 3, "job": 1}


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
