"""What every x2c task shares: the retry rule, the defaults, and a logger that works in and out
of a run (``task.fn()`` in unit tests runs outside any Prefect run)."""

from __future__ import annotations

import logging
from typing import Any

from prefect import Task
from prefect.client.schemas.objects import State, TaskRun
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from x2c.errors import SSHConnectError, XnatTransientError

# Worth another try: the network or a server hiccuped. Never a failed job, a missing input, a
# refused login or a changed host key: retrying those repeats the failure or locks an account.
TRANSIENT: tuple[type[BaseException], ...] = (SSHConnectError, XnatTransientError)

RETRIES = 3
RETRY_DELAYS_S: list[float] = [10.0, 30.0, 90.0]


def is_transient(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a transient error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, TRANSIENT):
            return True
        seen.add(id(exc))
        exc = exc.__cause__
    return False


def retry_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """``retry_condition_fn`` for every x2c task: retry transient errors only."""
    try:
        state.result()
    except BaseException as exc:  # the state's own exception, re-raised to be classified
        return is_transient(exc)
    return False


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run (it reaches the UI), else the module logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("x2c.tasks")
