"""What every x2c task shares: a logger that works in and out of a run (``task.fn()`` in unit
tests runs outside any Prefect run).

No task has Prefect retries: a pass is itself the retry. Its work is idempotent and its state
lives on Y and X, so whatever a pass could not do (XNAT down, a dropped SSH connection, an
answer lost by the Prefect API) the next pass finds undone and does; the only retry budgets are
the XNAT client's and the SSH host's own, each stated once (``XnatConfig.retries``,
``HostConfig.reconnect_attempts``), so they never multiply.
"""

from __future__ import annotations

import logging

from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The Prefect run logger inside a run (it reaches the UI), else the module logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("x2c.tasks")
