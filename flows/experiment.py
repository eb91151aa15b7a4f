"""``process_experiment``: one experiment through the recipe, reconciling first.

Reconcile (``decide``) says where the experiment stands: the result of this pipeline version
already verified on XNAT -> nothing to do; a job queued or running for it (the job registry on
the host) -> re-attach and wait, never submit again; a finished job with its archive -> collect
and upload; otherwise select, stage, build and submit. A rerun after a crash anywhere therefore
finishes the work with no duplicate job and no duplicate upload.

Limits: the experiment holds one slot of ``x2c-host-<host>`` from its first step on the host
until it ends (in-flight experiments per host, across every flow run on this Prefect server),
and one slot of ``x2c-xnat`` around each XNAT transfer (stage, upload). A check that finds the
result done takes no slot, so a rerun over a finished project never waits behind busy hosts.

Outcomes: ``done`` and ``skipped`` (no matching input: "skipped: <reason>") end the run
Completed; anything else ends it Failed, with the same :class:`~tasks.report.ExperimentResult`
(reason, job id, log tail) as its data, so a parent fan-out reads the why without a lookup.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

from prefect import flow, tags
from prefect.client.schemas.objects import State
from prefect.runtime import flow_run
from prefect.states import Failed

from tasks.build import build_job
from tasks.collect import collect_result
from tasks.decide import decide
from tasks.limits import host_slot, xnat_slot
from tasks.report import DONE, FAILED, SKIPPED, ExperimentResult, artifact_key, publish_results
from tasks.runtime import open_runtime
from tasks.select import select_inputs
from tasks.stage import stage_inputs
from tasks.submit import submit_job
from tasks.targets import list_targets
from tasks.upload import clean_workdir, upload_result
from tasks.wait import wait_job
from x2c.errors import JobFailedError, NothingToProcessError, X2CError
from x2c.provenance import public_url
from x2c.recipe import Action, Runtime, Target


def _run_name() -> str:
    params: dict[str, Any] = flow_run.parameters
    return f"{params.get('project')}-{params.get('label') or params.get('experiment')}"


def _target(
    rt: Runtime,
    project: str,
    experiment: str,
    pipeline: str,
    host: str,
    label: str,
    subject: str,
    last_modified: str,
) -> Target:
    if label and subject:  # a parent listing already named it: no request
        rt.pipeline(pipeline)
        rt.host_config(host)
        return Target(project, experiment, label, subject, pipeline, host, last_modified)
    return list_targets(rt, project, pipeline, host, [experiment])[0]


@flow(name="process-experiment", flow_run_name=_run_name, validate_parameters=True)
def process_experiment(
    settings_path: str,
    project: str,
    experiment: str,
    pipeline: str,
    host: str,
    label: str = "",
    subject: str = "",
    last_modified: str = "",
    retry_failed: bool = False,
    hold_host_slot: bool = True,
    wait_timeout_s: float | None = None,
) -> ExperimentResult | State[Any]:
    """Process one experiment (accession ID, or label when ``label``/``subject`` are not given)
    of ``project`` with ``pipeline`` on ``host``; see the module docstring.

    A caller that listed the project already passes ``label``, ``subject`` and
    ``last_modified`` (for the nightly ledger) with the ID, which saves the listing request.
    ``settings_path`` is the x2c settings file (the password comes from where it says, never
    from a parameter). ``retry_failed`` resubmits a job that failed before with unchanged
    inputs. ``hold_host_slot=False`` leaves the in-flight limit to the caller.
    """
    started = time.monotonic()
    rt = open_runtime(settings_path)
    t = _target(rt, project, experiment, pipeline, host, label, subject, last_modified)
    pipe = rt.pipeline(pipeline)
    facts: dict[str, Any] = {"action": "", "job_id": "", "in_flight": None}

    def result(state: str, reason: str, **extra: Any) -> ExperimentResult:
        fields = {**facts, **extra}
        return ExperimentResult(
            project=t.project,
            experiment=t.experiment,
            label=t.label,
            pipeline=t.pipeline,
            host=t.host,
            state=state,
            duration_s=round(time.monotonic() - started, 3),
            reason=reason,
            **fields,
        )

    try:
        with tags(f"pipeline:{t.pipeline}", f"host:{t.host}"):
            d = decide(rt, t, retry_failed)
            facts["action"] = d.action.value
            facts["job_id"] = str(d.job_id or "")
            if d.action is Action.SKIP_DONE:
                uri = f"{public_url(rt.xnat_config.url)}/data/experiments/{t.experiment}"
                out = result(DONE, d.reason, xnat_uri=f"{uri}/resources/{pipe.resource}")
            else:
                selection = select_inputs(rt, t) if d.action is Action.SUBMIT else None
                in_flight = rt.host_config(t.host).max_in_flight
                slot = host_slot(t.host, in_flight) if hold_host_slot else nullcontext()
                with slot:
                    took = time.time()
                    try:
                        job_id = d.job_id
                        if selection is not None:
                            with xnat_slot(rt.settings.limits.xnat_transfers):
                                stage_inputs(rt, t, selection)
                            spec = build_job(rt, t, selection)
                            job_id = submit_job(rt, t, spec)
                            facts["job_id"] = str(job_id)
                        assert job_id is not None
                        outcome = wait_job(rt, t, job_id, wait_timeout_s)
                        archive = collect_result(rt, t)
                        with xnat_slot(rt.settings.limits.xnat_transfers):
                            uploaded = upload_result(rt, t, archive, outcome)
                        clean_workdir(rt, t)
                    finally:
                        facts["in_flight"] = (took, time.time())
                out = result(
                    DONE,
                    f"job {job_id} {outcome.state.value.lower()}; result uploaded and verified",
                    xnat_uri=uploaded.uri,
                )
    except NothingToProcessError as exc:
        out = result(SKIPPED, f"skipped: {exc.reason}")
    except JobFailedError as exc:
        # decide raises it for a job that failed before and was not resubmitted: say so
        facts["action"] = facts["action"] or "report_failed"
        out = result(FAILED, str(exc), job_id=exc.job_id or facts["job_id"], log_tail=exc.log_tail)
    except (X2CError, TimeoutError) as exc:
        out = result(FAILED, f"{type(exc).__name__}: {exc}")
    key = artifact_key("x2c", t.project, t.label, t.pipeline)
    publish_results(key, f"{t.pipeline} for {t.project}/{t.label}", [out])
    if out.failed:
        return Failed(message=f"{t.project}/{t.label}: {out.reason}", data=out)
    return out
