"""Prefect tasks: one per recipe step, each a thin wrapper over one x2c function."""
