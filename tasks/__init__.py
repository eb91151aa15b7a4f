"""Prefect tasks: the phases of a reconcile pass, each a thin wrapper over one :mod:`x2c`
function.

================  ===========================  ==========================================
module            task (run name)              wraps
================  ===========================  ==========================================
survey.py         survey                       ``reconcile.survey``: one listing per
                                               project, one claim scan and one scheduler
                                               poll per host
submit.py         claim-places                 ``reconcile.claim_places`` (one command per
                                               host, under its lock)
                  submit-{label}               ``reconcile.launch``: select, stage, build,
                                               submit
upload.py         upload-{label}               ``reconcile.finish``: collect, upload,
                                               clean
report.py         (artifacts)                  the pass's table and summary, and each
                                               experiment's history
watch.py          list-sessions-{project},     ``xnat.list_experiments``; ``run_deployment``
                  start-{project}-{label}      with an idempotency key
================  ===========================  ==========================================

Why a task per phase and not per step: a task run costs ~7-18 ms of client time, measured
here; seven per experiment would spend most of the per-experiment budget on bookkeeping. The
steps inside a phase log to its run, in a user's words.

Shared rules: no Prefect retries and no timeouts (:mod:`tasks.common`): a pass is itself the
retry, and a hang is bounded where it can be stopped, in x2c (every XNAT request has
``XnatConfig.timeout``, SSH has a connect timeout and keepalives that declare a silent
connection lost); ``cache_policy=NO_CACHE`` (every phase has side effects or must see the
present).

Why not prefect-shell's ``ShellOperation`` for the commands on the hosts: x2c runs them
through its ``Runner`` seam (:mod:`x2c.hosts`), the same ``run(argv)`` for this machine and
for SSH hosts, so the recipe is one code path whatever the host; ``ShellOperation`` takes shell
*strings* and ties the process to the task, while jobs are detached so that they outlive every
orchestrator process.
"""
