"""x2c.xnat's public API is its complete __all__, and no secret reaches a log record."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import x2c.xnat
from tests.x2c.xnat.conftest import xnat_config
from x2c.errors import XnatAuthError
from x2c.xnat import connect, list_experiments, upload_directory


def test_all_is_complete() -> None:
    # ruff's RUF022 keeps __all__ sorted (constants first); here: complete, no duplicates.
    assert len(set(x2c.xnat.__all__)) == len(x2c.xnat.__all__)
    modules = {"catalog", "failures", "select", "session", "stream", "upload"}
    public = {n for n in vars(x2c.xnat) if not n.startswith("_")} - modules
    assert public == set(x2c.xnat.__all__)


def test_no_password_in_any_log_record(
    xnat_server: Any, own_experiments: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(XnatAuthError):
        connect(xnat_config(xnat_server, password="Wrong-" + xnat_server.password))
    with connect(xnat_config(xnat_server)) as session:
        list_experiments(session, "DEMO")
        (tmp_path / "r.txt").write_text("r")
        upload_directory(
            session,
            own_experiments[0],
            "LOGS",
            tmp_path,
            provenance={},
            version="1",
            on_exists="replace",
        )
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text, "expected some debug records"
    assert xnat_server.password not in text
