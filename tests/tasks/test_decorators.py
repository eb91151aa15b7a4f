"""Every x2c task is declared the same way: transient-only retries, no caching, a run name that
names the experiment."""

from __future__ import annotations

import pytest
from prefect import Task
from prefect.cache_policies import NO_CACHE

from tasks import build, collect, decide, select, stage, submit, targets, upload, wait, watch
from tasks.common import RETRIES, retry_transient

STEPS: list[Task[..., object]] = [
    decide.decide,
    select.select_inputs,
    stage.stage_inputs,
    build.build_job,
    submit.submit_job,
    wait.wait_job,
    collect.collect_result,
    upload.upload_result,
    upload.clean_workdir,
    targets.list_targets,
    targets.pending_targets,
    watch.list_sessions,
]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s.name)
def test_steps_retry_only_transient_errors_and_never_cache(step: Task[..., object]) -> None:
    assert step.retries == RETRIES
    assert step.retry_condition_fn is retry_transient
    assert step.cache_policy is NO_CACHE
    assert isinstance(step.task_run_name, str) and "{" in step.task_run_name


def test_per_experiment_steps_are_named_after_the_label() -> None:
    per_experiment = STEPS[:9]
    assert all(s.task_run_name == f"{s.name}-{{t.label}}" for s in per_experiment)


def test_starting_a_run_is_retried_on_any_error_since_it_is_idempotent() -> None:
    assert watch.start_run.retries == RETRIES
    assert watch.start_run.retry_condition_fn is None
    assert watch.idempotency_key("demo", "XNAT_E00001") == "demo:XNAT_E00001"
