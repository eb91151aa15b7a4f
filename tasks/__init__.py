"""Prefect tasks: one per recipe step, each a thin wrapper over one :mod:`x2c.recipe` function.

================  ===========================  ==========================================
module            task (run name)              wraps
================  ===========================  ==========================================
targets.py        targets-{project}            ``recipe.targets`` (one listing)
                  pending-{project}-{pipeline} ``recipe.pending`` (the nightly's to-do)
decide.py         decide-{label}               ``recipe.decide`` (reconcile)
select.py         select-{label}               ``recipe.select``
stage.py          stage-{label}                ``recipe.stage`` (X -> Y)
build.py          build-{label}                ``recipe.build``
submit.py         submit-{label}               ``recipe.submit`` (exactly once)
wait.py           wait-{label}                 ``recipe.wait`` (the host's shared poller)
collect.py        collect-{label}              ``recipe.collect``
upload.py         upload-{label}, clean-{label} ``recipe.upload`` (Y -> X), ``recipe.clean``
watch.py          list-sessions-{project},     ``xnat.list_experiments``; ``run_deployment``
                  start-{project}-{label}      with an idempotency key
================  ===========================  ==========================================

Shared rules (:mod:`tasks.common`): retries only for transient errors (``SSHConnectError``,
``XnatTransientError``; never ``JobFailedError``, ``NothingToProcessError``, refused logins or
changed host keys); ``cache_policy=NO_CACHE`` (every step has side effects or must see the
present); logs through the run logger in a user's words; the flow applies ``pipeline:<name>`` and
``host:<name>`` tags to every task run of an experiment.

Timeouts: no step has a Prefect ``timeout_seconds``. Flows run these tasks in worker threads
(the fan-out's ThreadPoolTaskRunner), where Prefect cannot interrupt a blocking call and only
warns; a hang is bounded where it can actually be stopped, in x2c: every XNAT request has
``XnatConfig.timeout``, SSH has a connect timeout and keepalives that declare a silent
connection lost, the poller gives up after ``poll_give_up_s`` without a good poll, and
``wait`` takes a caller's timeout (``wait_timeout_s``; a queued job may rightly wait for days).

Why not prefect-shell's ``ShellOperation`` for commands on this machine (the local host's jobs,
for one): x2c already runs them through its ``Runner`` seam (:mod:`x2c.hosts`), the same
``run(argv)`` interface as for SSH hosts, so the recipe is one code path whatever the host and
is tested on both. ``ShellOperation`` takes shell *strings* (a script written to a temporary
file), which would reintroduce quoting of experiment labels into a shell line that the Runner's
argv lists avoid by construction; and it ties the process to the task, whereas the local
scheduler deliberately detaches jobs (``setsid``) so they survive an orchestrator restart and a
rerun re-attaches to them.
"""
