"""Prefect flows: compose the tasks in tasks/ into passes.

- ``flows.reconcile.reconcile`` ("x2c-reconcile", run name ``pass-<scope>``): one pass over a
  scope; the ``reconcile`` (every 5 minutes), ``nightly``, ``batch`` and ``on-new-session``
  deployments are all this flow with different scopes.
- ``flows.watch.watch_xnat`` ("watch-xnat"): one ``on-new-session`` pass per new session,
  exactly once (high-water mark + idempotency key).

Every flow takes the settings file's PATH (``settings_path``), never a credential.
"""
