"""Every x2c task is declared the same way: no Prefect retries (the next pass is the retry, so
retry budgets never multiply), no caching, and per-experiment tasks named after the label."""

from __future__ import annotations

import pytest
from prefect import Task
from prefect.cache_policies import NO_CACHE

from tasks import submit, survey, upload, watch

TASKS: list[Task[..., object]] = [
    survey.survey_scope,
    submit.claim_places,
    submit.submit_experiment,
    upload.upload_result,
    watch.list_sessions,
]


@pytest.mark.parametrize("step", TASKS, ids=lambda s: s.name)
def test_pass_tasks_never_retry_and_never_cache(step: Task[..., object]) -> None:
    assert step.retries == 0
    assert step.cache_policy is NO_CACHE


def test_per_experiment_tasks_are_named_after_the_label() -> None:
    for step in (submit.submit_experiment, upload.upload_result):
        assert step.task_run_name == f"{step.name}-{{t.label}}"


def test_starting_a_run_is_retried_on_any_error_since_it_is_idempotent() -> None:
    assert watch.start_run.retries == 2
    assert watch.start_run.retry_condition_fn is None
    key = watch.idempotency_key("https://x.org", "P1", "demo", "XNAT_E00001")
    assert key == "https://x.org|P1|demo|XNAT_E00001"
    # one experiment ID on two XNATs (or, after a move, in two projects) is two experiments
    assert key != watch.idempotency_key("https://y.org", "P1", "demo", "XNAT_E00001")
    assert key != watch.idempotency_key("https://x.org", "P2", "demo", "XNAT_E00001")
