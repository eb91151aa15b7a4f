"""Helpers that create work pools and concurrency limits; prefect.yaml holds the deployments."""
