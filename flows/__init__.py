"""Prefect flows: compose the tasks in tasks/ (one experiment, many, nightly, watcher).

- ``flows.experiment.process_experiment`` ("process-experiment", run name
  ``<project>-<label>``): one experiment, reconciling first; holds ``x2c-host-<host>`` while in
  flight and ``x2c-xnat`` around each transfer.
- ``flows.batch.process_experiments`` ("process-experiments"): the fan-out over a list or a
  project, one child run per experiment; Failed when any failed, with a summary.
- ``flows.nightly.nightly`` ("x2c-nightly"): every configured (project, pipeline, host), what is
  not done yet.
- ``flows.watch.watch_xnat`` ("watch-xnat"): one ``on-new-session`` run per new session, exactly
  once (high-water mark + idempotency key).

Every flow takes the settings file's PATH (``settings_path``), never a credential.
"""
