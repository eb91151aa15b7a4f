"""Prefect flows: compose the tasks in tasks/ (one experiment, many, nightly, watcher)."""
