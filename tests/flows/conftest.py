"""One Prefect test harness for every flow test (starting one costs about 13 s).

The harness runs a throwaway Prefect API on SQLite in a subprocess. Settings go through
``temporary_settings`` rather than the environment: the autouse ``clean_environ`` fixture removes
every ``PREFECT_*`` variable before each test, and the heartbeat setting needs ``None``, which an
environment variable cannot express (with the default heartbeat a flow run costs ~1.1 s instead of
~0.15 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_HOME,
    PREFECT_LOGGING_TO_API_BATCH_INTERVAL,
    PREFECT_RESULTS_LOCAL_STORAGE_PATH,
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS,
    temporary_settings,
)
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session", autouse=True)
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run every test in this directory against one temporary Prefect API."""
    home: Path = tmp_path_factory.mktemp("prefect-home")
    with (
        temporary_settings(
            updates={
                PREFECT_HOME: home,
                PREFECT_RESULTS_LOCAL_STORAGE_PATH: home / "storage",
                PREFECT_SERVER_ANALYTICS_ENABLED: False,
                PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
                PREFECT_LOGGING_TO_API_BATCH_INTERVAL: 0.3,
                # a blocked slot request is retried after at most this long (default 30 s): the
                # in-flight limit test waits on freed slots and should not idle between them
                PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS: 1.0,
            }
        ),
        prefect_test_harness(server_startup_timeout=60),
    ):
        yield
