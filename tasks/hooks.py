"""Run the site's hooks for one experiment that ended in this pass, on Z, through prefect-shell's
``ShellOperation``: their output lines stream into this task run's logs. The commands (templated,
quoted, with a clean environment) come from :mod:`x2c.hooks`; a failing hook is appended to the
row's reason and never changes its state."""

from __future__ import annotations

import os
import re
from dataclasses import replace

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect_shell import ShellOperation

from tasks.common import run_logger
from x2c.hooks import PASSED_ENV, hook_failure, hooks_of_row
from x2c.reconcile import Row
from x2c.runtime import Runtime

# prefect-shell 0.3 raises RuntimeError("PID <pid> failed with return code <n>.")
_RETURN_CODE = re.compile(r"return code (-?\d+)")


@task(name="hook", task_run_name="hook-{row.label}", cache_policy=NO_CACHE)
def run_hooks(rt: Runtime, row: Row) -> Row:
    """Run every hook ``row`` fires, in order; returns the row, its reason extended with
    ``hook <program> exited <n>`` for each hook that failed."""
    base_env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    failures = []
    for hook in hooks_of_row(rt, row, base_env):
        try:
            ShellOperation(commands=[hook.command], stream_output=True).run()
        except (RuntimeError, OSError) as exc:
            found = _RETURN_CODE.search(str(exc))
            failures.append(hook_failure(hook.argv, found.group(1) if found else str(exc)))
            run_logger().warning("%s: %s", row.label, failures[-1])
    if not failures:
        return row
    return replace(
        row, reason="; ".join([row.reason, *failures]) if row.reason else "; ".join(failures)
    )
