"""The recipe driven step by step without Prefect, against the real devxnat server, the local
host and the local scheduler, with the demo pipeline run bare (runtime none) by this venv's
python. Crashes are simulated by calling the steps partway and deciding again."""

from __future__ import annotations

import io
import json
import logging
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.xnat_data import add_session, put, xnat_config
from x2c import jobdir as jd
from x2c import recipe
from x2c.config import HostConfig, SchedulerConfig
from x2c.devxnat.demo import nifti_bytes
from x2c.errors import JobFailedError, NothingToProcessError, PipelineError
from x2c.recipe import Action, Runtime, Target
from x2c.settings import Settings, XnatSource
from x2c.xnat import connect, path_of, resource_status

DATA = Path(__file__).resolve().parents[1] / "data" / "settings"
VENV_BIN = str(Path(sys.executable).parent)
QUICK = {"poll_min_s": 0.2, "poll_max_s": 1.0, "exit_marker_grace_s": 3.0}


def make_settings(server: Any, tmp: Path, host: HostConfig, **fields: Any) -> Settings:
    return Settings(
        xnat=XnatSource(url=server.url, user=server.user),
        hosts={host.name: host},
        pipelines=("demo", str(DATA / "failing.yaml")),
        state_dir=tmp / "state",
        **fields,
    )


def local_host(tmp: Path) -> HostConfig:
    return HostConfig(
        name="local",
        workdir=str(tmp / "work dir"),
        scheduler=SchedulerConfig(kind="local", max_local_jobs=2, **QUICK),
        path_prepend=(VENV_BIN,),
    )


class Counter:
    """The devxnat server's own request count since :meth:`reset` (admin routes excluded)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def reset(self) -> None:
        self.server.reset_counts()

    def total(self) -> int:
        counts = self.server.request_counts()
        return sum(v for k, v in counts.items() if not k.split(" ", 1)[1].startswith("/x2c"))


def local_jobs(rt: Runtime, t: Target) -> list[str]:
    """Every job the local scheduler ever queued for ``t``'s experiment (its state dir)."""
    state = Path(rt.host_config(t.host).workdir) / ".x2c-local"
    if not state.is_dir():
        return []
    return sorted(
        d.name
        for d in state.iterdir()
        if (d / "tag").is_file() and f".{t.experiment}." in (d / "tag").read_text()
    )


def cycle(rt: Runtime, t: Target, **decide: Any) -> Any:
    """What the flow does: reconcile, then the steps the decision calls for."""
    d = recipe.decide(rt, t, **decide)
    if d.action is Action.SKIP_DONE:
        return d
    if d.action is Action.SUBMIT:
        selection = recipe.select(rt, t)
        recipe.stage(rt, t, selection)
        spec = recipe.build(rt, t, selection)
        job = recipe.submit(rt, t, spec)
    else:
        assert d.job_id is not None
        job = d.job_id
    outcome = recipe.wait(rt, t, job, timeout=120)
    receipt = recipe.upload(rt, t, recipe.collect(rt, t), outcome)
    recipe.clean(rt, t)
    return receipt


@pytest.fixture
def rt(xnat_server: Any, tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(
        make_settings(xnat_server, tmp_path, local_host(tmp_path)), xnat_config(xnat_server)
    )
    yield runtime
    runtime.close()


@pytest.fixture
def project(xnat_server: Any) -> str:
    return str(xnat_server.new_project("RCP"))


def target_for(rt: Runtime, project: str, eid: str, pipeline: str = "demo") -> Target:
    [t] = recipe.targets(rt, project, pipeline, "local", [eid])
    return t


def test_full_cycle_uploads_a_verified_result_and_a_rerun_does_nothing(
    rt: Runtime, project: str, xnat_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    eid = add_session(xnat_server, project, "S1", "S1_MR1")
    counter = Counter(xnat_server)
    assert rt.xnat is not None  # connect outside the count
    t = target_for(rt, project, eid)
    assert (t.experiment, t.label, t.subject, t.project) == (eid, "S1_MR1", "S1", project)

    counter.reset()
    receipt = cycle(rt, t)
    full_cycle_requests = counter.total()

    status = resource_status(rt.xnat, eid, "DEMO_STATS", "1.0.0")
    assert status.done, status.reason
    assert [f.path for f in receipt.files] == ["DEMO_STATS.zip"]
    prov = status.provenance
    assert prov is not None
    assert prov["pipeline"]["name"] == "demo" and prov["pipeline"]["version"] == "1.0.0"
    assert prov["job"]["scheduler"] == "local" and prov["job"]["exit_code"] == 0
    assert prov["job"]["job_id"] == local_jobs(rt, t)[0]
    assert prov["inputs"][0]["md5"] and prov["inputs"][0]["path"].endswith("T1.nii")
    assert prov["source"] == {
        "xnat": xnat_server.url,
        "project": project,
        "subject": "S1",
        "experiment": "S1_MR1",
    }
    # the archive holds the demo's real outputs
    blob = b"".join(
        rt.xnat.request(
            "GET",
            path_of(
                "data", "experiments", eid, "resources", "DEMO_STATS", "files", "DEMO_STATS.zip"
            ),
            what="fetch",
        ).iter_content(1 << 16)
    )
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert sorted(zf.namelist()) == ["mask.nii.gz", "stats.json"]
        assert json.loads(zf.read("stats.json"))["mask_voxels"] > 0
    assert not Path(recipe._jobdir(rt, t).root).exists(), "clean removes the job directory"

    counter.reset()
    again = recipe.decide(rt, t)
    no_op_requests = counter.total()
    assert again.action is Action.SKIP_DONE
    assert len(local_jobs(rt, t)) == 1, "the rerun submitted nothing"

    counter.reset()
    assert recipe.pending(rt, project, "demo", "local") == []
    nightly_requests = counter.total()
    # full cycle: resource_status 1 + select 2 + stream 1 + upload 1+4+1 + experiment 1
    # (targets' listing is outside the count); no-op decide: resource_status 2; nightly: 1
    assert full_cycle_requests <= 12, full_cycle_requests
    assert no_op_requests == 2
    assert nightly_requests == 1
    print(
        f"\nrequests: full cycle {full_cycle_requests}, no-op decide {no_op_requests}, "
        f"nightly no-op {nightly_requests}"
    )

    password = xnat_server.password
    assert password not in repr(t)
    assert password not in caplog.text
    assert password not in json.dumps(prov)


def test_pending_checks_only_changed_experiments(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    done_id = add_session(xnat_server, project, "P1", "P1_MR1")
    todo_id = add_session(xnat_server, project, "P2", "P2_MR1", index=2)
    empty_id = add_session(xnat_server, project, "P3", "P3_MR1", scan_type="DWI")
    cycle(rt, target_for(rt, project, done_id))
    counter = Counter(xnat_server)

    counter.reset()
    first = recipe.pending(rt, project, "demo", "local")
    assert [t.experiment for t in first] == sorted([todo_id, empty_id])
    assert counter.total() == 1 + 2 * 1  # listing + resource_status of the two unknown ones

    with pytest.raises(NothingToProcessError, match="no scan of type T1"):
        recipe.select(rt, target_for(rt, project, empty_id))
    counter.reset()
    assert [t.experiment for t in recipe.pending(rt, project, "demo", "local")] == [todo_id]
    assert counter.total() == 1 + 1


def test_nothing_to_process_names_the_reason(rt: Runtime, project: str, xnat_server: Any) -> None:
    eid = add_session(xnat_server, project, "N1", "N1_MR1", scan_type="DWI")
    t = target_for(rt, project, eid)
    assert recipe.decide(rt, t).action is Action.SUBMIT
    with pytest.raises(NothingToProcessError) as info:
        recipe.select(rt, t)
    assert "no scan of type T1*, *MPRAGE*" in info.value.reason
    assert "DWI" in info.value.reason
    assert local_jobs(rt, t) == []


@pytest.mark.parametrize(
    "crash",
    [
        "after_stage",
        "after_build",
        "before_sbatch",
        "after_submitting",
        "while_waiting",
        "after_job",
        "mid_upload",
        "after_upload",
        "upload_unrecorded",
    ],
)
def test_a_rerun_after_a_crash_finishes_with_one_job_and_one_upload(
    rt: Runtime, project: str, xnat_server: Any, crash: str
) -> None:
    eid = add_session(xnat_server, project, "C1", f"C1_{crash}")
    t = target_for(rt, project, eid)
    host = rt.host("local")
    jobdir = recipe._jobdir(rt, t)

    selection = recipe.select(rt, t)
    recipe.stage(rt, t, selection)
    expected: Action = Action.SUBMIT
    job = None
    if crash != "after_stage":
        spec = recipe.build(rt, t, selection)
    if crash in ("before_sbatch", "after_submitting"):
        # the crash hit after the registry said "submitting": before sbatch ran, or after it
        record = jd.JobRecord.model_validate(
            {
                "job_id": "",
                "scheduler": "local",
                "host": "local",
                "pipeline": "demo",
                "version": "1.0.0",
                "experiment": eid,
                "submitted_at": "2026-01-01T00:00:00Z",
                "state": "submitting",
                "tag": spec.tag,
            }
        )
        jd.write_record(host.fs, jobdir, record)
    if crash == "after_submitting":
        job = rt.scheduler("local").submit(spec)
        expected = Action.ATTACH
    elif crash in ("while_waiting", "after_job", "mid_upload", "after_upload", "upload_unrecorded"):
        job = recipe.submit(rt, t, spec)
        expected = Action.ATTACH
    if crash in ("after_job", "mid_upload", "after_upload", "upload_unrecorded"):
        poller = rt.poller("local")
        poller.register(job, exit_marker=jobdir.exit_code, log=jobdir.log)
        assert poller.wait(job, timeout=120).ok  # the job ends; the registry never hears it
        poller.forget(job)
        expected = Action.COLLECT
    if crash == "mid_upload":
        with connect(xnat_config(xnat_server)) as s:
            put(s, "data", "experiments", eid, "resources", "DEMO_STATS")
            put(
                s,
                "data",
                "experiments",
                eid,
                "resources",
                "DEMO_STATS",
                "files",
                "part.zip",
                params={"inbody": "true"},
                body=b"partial",
            )
    if crash in ("after_upload", "upload_unrecorded"):
        outcome = recipe.wait(rt, t, job, timeout=120)
        recipe.upload(rt, t, recipe.collect(rt, t), outcome)
        expected = Action.SKIP_DONE
    if crash == "upload_unrecorded":  # the upload was verified, the registry never heard
        record = jd.read_record(host.fs, jobdir)
        assert record is not None
        jd.write_record(host.fs, jobdir, record.model_copy(update={"state": "COMPLETED"}))

    decision = recipe.decide(rt, t)
    if crash == "while_waiting" and decision.action is Action.COLLECT:
        expected = Action.COLLECT  # the demo job is quick: it may have ended already
    assert decision.action is expected, decision
    if expected in (Action.ATTACH, Action.COLLECT):
        assert decision.job_id == job
    cycle(rt, t)

    assert resource_status(rt.xnat, eid, "DEMO_STATS", "1.0.0").done
    assert len(local_jobs(rt, t)) == 1
    listed = rt.xnat.result_set(
        path_of("data", "experiments", eid, "resources", "DEMO_STATS", "files"), what="list"
    )
    assert sorted(row["Name"] for row in listed) == ["DEMO_STATS.zip", "provenance.json"]
    assert not Path(jobdir.root).exists()
    assert recipe.decide(rt, t).action is Action.SKIP_DONE


def test_a_failed_job_is_reported_again_not_resubmitted(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    eid = add_session(xnat_server, project, "F1", "F1_MR1")
    t = target_for(rt, project, eid, pipeline="failing")
    with pytest.raises(JobFailedError) as info:
        cycle(rt, t)
    err = info.value
    assert (err.state, err.exit_code) == ("FAILED", 3)
    assert "boom on F1" in err.log_tail
    assert err.job_id and err.job_id in str(err)
    record = jd.read_record(rt.host("local").fs, recipe._jobdir(rt, t))
    assert record is not None and record.state == "FAILED"

    with pytest.raises(JobFailedError, match="retry_failed=True") as again:
        recipe.decide(rt, t)
    assert again.value.job_id == err.job_id and "boom on F1" in again.value.log_tail
    assert len(local_jobs(rt, t)) == 1

    retry = recipe.decide(rt, t, retry_failed=True)
    assert retry.action is Action.SUBMIT
    with pytest.raises(JobFailedError):
        cycle(rt, t, retry_failed=True)
    assert len(local_jobs(rt, t)) == 2


def test_hostile_labels_are_data(
    rt: Runtime, project: str, xnat_server: Any, tmp_path: Path
) -> None:
    subject, label = "-rf", "--help..Ωmega-$x"[:-3]
    eid = add_session(
        xnat_server,
        project,
        subject,
        label,
        scan_type="T1 $(touch PWNED); `touch PWNED2` ' \" ../..",
    )
    t = target_for(rt, project, eid)
    assert (t.subject, t.label) == (subject, label)
    cycle(rt, t)
    status = resource_status(rt.xnat, eid, "DEMO_STATS", "1.0.0")
    assert status.done and status.provenance is not None
    assert status.provenance["source"]["subject"] == subject
    workdir = Path(rt.host_config("local").workdir)
    assert not list(workdir.rglob("PWNED*")) and not list(tmp_path.rglob("PWNED*"))
    assert not Path("PWNED").exists()


def test_plan_shows_every_step_and_changes_nothing(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    eid = add_session(xnat_server, project, "D1", "D1_MR1")
    t = target_for(rt, project, eid)
    counts_before = xnat_server.request_counts()
    lines = recipe.plan(rt, t)
    text = "\n".join(lines)
    assert "decide: submit" in text
    assert f"{xnat_server.url}/data/experiments/{eid}/scans/1/resources/NIFTI/files/T1.nii" in text
    assert "| #!/usr/bin/env bash" in text and "x2c.demo_pipeline" in text
    assert "submit: local job" in text and "clean: rm -rf" in text
    assert f"upload: PUT {xnat_server.url}/data/experiments/{eid}/resources/DEMO_STATS\n" in text
    assert xnat_server.password not in text
    after = xnat_server.request_counts()
    writes = {
        k: after.get(k, 0) - counts_before.get(k, 0)
        for k in after
        if not k.startswith("GET") and not k.split(" ", 1)[1].startswith("/x2c")
    }
    assert not any(writes.values()), writes
    assert not Path(recipe._jobdir(rt, t).root).exists()
    assert local_jobs(rt, t) == []
    empty = add_session(xnat_server, project, "D2", "D2_MR1", scan_type="DWI")
    assert recipe.plan(rt, target_for(rt, project, empty))[-1].startswith(
        "skip: nothing to process, because no scan of type"
    )


def test_plan_attaches_to_a_job_recorded_as_running(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    """The dry run cannot poll, so it trusts the registry: a live job is attached to, never
    reported as failed and never submitted again."""
    eid = add_session(xnat_server, project, "R1", "R1_MR1")
    t = target_for(rt, project, eid)
    spec = recipe.build(rt, t, recipe.select(rt, t))
    host = rt.host("local")
    jobdir = recipe._jobdir(rt, t)
    record = jd.JobRecord(
        job_id="4242",
        scheduler="local",
        host="local",
        pipeline="demo",
        version="1.0.0",
        experiment=eid,
        submitted_at="2026-11-27T00:00:00Z",
        state="RUNNING",
    )
    jd.write_record(host.fs, jobdir, record)
    lines = recipe.plan(rt, t)
    assert lines[1].startswith("decide: attach: job 4242 was last recorded as running"), lines
    assert not any(line.startswith("submit:") for line in lines), lines
    assert Path(spec.script_path).exists()


def test_the_job_script_never_holds_the_password(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    eid = add_session(xnat_server, project, "K1", "K1_MR1")
    t = target_for(rt, project, eid)
    selection = recipe.select(rt, t)
    spec = recipe.build(rt, t, selection)
    script = Path(spec.script_path).read_text()
    assert xnat_server.password not in script and xnat_server.url not in script
    assert f"export PATH={VENV_BIN}" in script
    # a password that appears in a label is refused rather than written
    hostile = Target(project, eid, xnat_server.password, "S", "demo", "local")
    with pytest.raises(Exception, match="forbidden value"):
        recipe.build(rt, hostile, selection)


def test_submit_refuses_while_another_process_submits(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    import os

    from x2c.errors import SubmissionError

    eid = add_session(xnat_server, project, "L1", "L1_MR1")
    t = target_for(rt, project, eid)
    selection = recipe.select(rt, t)
    unbuilt = recipe._spec(rt, t, rt.pipeline("demo"), "x2c.demo.unbuilt")
    with pytest.raises(SubmissionError, match="build the job before submitting it"):
        recipe.submit(rt, t, unbuilt)
    recipe.stage(rt, t, selection)
    spec = recipe.build(rt, t, selection)
    lock = Path(recipe._jobdir(rt, t).root) / recipe.SUBMIT_LOCK
    lock.mkdir()  # another orchestrator is between its registry write and sbatch
    with pytest.raises(SubmissionError, match="another x2c process is submitting"):
        recipe.submit(rt, t, spec)
    assert local_jobs(rt, t) == []
    old = lock.stat().st_mtime - (recipe.STALE_LOCK_MIN + 1) * 60
    os.utime(lock, (old, old))  # ... and crashed long ago: the lock is taken over
    job = recipe.submit(rt, t, spec)
    assert local_jobs(rt, t) == [job] and not lock.exists()
    assert recipe.submit(rt, t, spec) == job, "a second submit returns the queued job"
    with pytest.raises(PipelineError, match="attach to it"):
        recipe.build(rt, t, selection)  # never pulls the script from under a live job
    assert local_jobs(rt, t) == [job]
    recipe.wait(rt, t, job, timeout=120)


def test_a_new_pipeline_version_is_recomputed(
    rt: Runtime, project: str, xnat_server: Any, tmp_path: Path
) -> None:
    eid = add_session(xnat_server, project, "V1", "V1_MR1")
    cycle(rt, target_for(rt, project, eid))
    settings = rt.settings.model_copy(
        update={"pipelines": (str(DATA / "demo-v2.yaml"),), "keep_workdir": True}
    )
    v2 = Runtime(settings, rt.xnat_config)
    try:
        t = target_for(v2, project, eid)
        decision = recipe.decide(v2, t)
        assert decision.action is Action.SUBMIT
        assert "holds version 1.0.0, not 2.0.0" in decision.reason
        assert [x.experiment for x in recipe.pending(v2, project, "demo", "local")] == [eid]
        cycle(v2, t)
        status = resource_status(v2.xnat, eid, "DEMO_STATS", "2.0.0")
        assert status.done and status.provenance is not None
        assert status.provenance["pipeline"]["version"] == "2.0.0"
        assert len(local_jobs(v2, t)) == 2
        # the kept job directory of version 2 is left alone by version 1, which resubmits
        assert Path(recipe._jobdir(v2, t).root).exists()
        again = recipe.decide(rt, target_for(rt, project, eid))
        assert again.action is Action.SUBMIT and "ran version 2.0.0, not 1.0.0" in again.reason
    finally:
        v2.close()


def test_a_failure_seen_after_a_restart_keeps_its_log_and_fixed_inputs_rerun(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    eid = add_session(xnat_server, project, "G1", "G1_MR1")
    t = target_for(rt, project, eid, pipeline="failing")
    selection = recipe.select(rt, t)
    recipe.stage(rt, t, selection)
    job = recipe.submit(rt, t, recipe.build(rt, t, selection))
    jobdir = recipe._jobdir(rt, t)
    poller = rt.poller("local")
    poller.register(job, exit_marker=jobdir.exit_code, log=jobdir.log)
    assert not poller.wait(job, timeout=120).ok  # it failed while the orchestrator was down
    poller.forget(job)

    with pytest.raises(JobFailedError) as info:
        recipe.decide(rt, t)
    assert (info.value.job_id, info.value.state, info.value.exit_code) == (job, "FAILED", 3)
    assert "boom on G1" in info.value.log_tail

    with connect(xnat_config(xnat_server)) as s:  # someone fixes the input on XNAT
        put(
            s,
            "data",
            "experiments",
            eid,
            "scans",
            "1",
            "resources",
            "NIFTI",
            "files",
            "T1.nii",
            params={"inbody": "true", "overwrite": "true"},
            body=nifti_bytes(7),
        )
    decision = recipe.decide(rt, t)
    assert decision.action is Action.SUBMIT and "inputs changed" in decision.reason


def test_many_experiments_in_threads_share_one_poller(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ids = [add_session(xnat_server, project, f"M{i}", f"M{i}_MR1", index=i) for i in range(4)]
    found = recipe.targets(rt, project, "demo", "local")
    assert sorted(t.experiment for t in found) == sorted(ids)
    with ThreadPoolExecutor(max_workers=4) as pool:
        receipts = list(pool.map(lambda t: cycle(rt, t), found))
    assert all(r.files for r in receipts)
    for t in found:
        assert resource_status(rt.xnat, t.experiment, "DEMO_STATS", "1.0.0").done
        assert len(local_jobs(rt, t)) == 1
    poller = rt.poller("local")
    assert poller.failed_polls == 0
    assert recipe.pending(rt, project, "demo", "local") == []


@pytest.mark.podman
def test_full_cycle_in_podman_records_the_image_digest(
    xnat_server: Any, project: str, tmp_path: Path, podman_image: str
) -> None:
    host = local_host(tmp_path).model_copy(
        update={"container_runtime": "podman", "path_prepend": ()}
    )
    rt = Runtime(make_settings(xnat_server, tmp_path, host), xnat_config(xnat_server))
    try:
        eid = add_session(xnat_server, project, "-P1", "P1..MR1", index=5)
        t = target_for(rt, project, eid)
        cycle(rt, t)
        status = resource_status(rt.xnat, eid, "DEMO_STATS", "1.0.0")
        assert status.done and status.provenance is not None
        container = status.provenance["container"]
        assert container["runtime"] == "podman" and container["image"] == podman_image
        assert str(container["digest"]).startswith("sha256:")
        assert status.provenance["command"][0][:2] == ["python3", "-m"]
    finally:
        rt.close()


def test_targets_by_label_or_id_and_unknown_names(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    a = add_session(xnat_server, project, "T1", "T1_MR1")
    b = add_session(xnat_server, project, "T2", "T2_MR1", index=2)
    chosen = recipe.targets(rt, project, "demo", "local", ["T2_MR1", a])
    assert [t.experiment for t in chosen] == sorted([a, b])
    with pytest.raises(Exception, match="has no experiment 'NOPE'"):
        recipe.targets(rt, project, "demo", "local", ["NOPE", a])


def test_demo_settings_process_the_demo_project(fresh_xnat_server: Any, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from x2c.settings import demo_settings

    settings = demo_settings(
        xnat_url=fresh_xnat_server.url,
        xnat_user=fresh_xnat_server.user,
        workdir=str(tmp_path / "work"),
        state_dir=tmp_path / "state",
        runtime="none",
    )
    rt = Runtime(settings, xnat_config(fresh_xnat_server))
    try:
        [run] = settings.projects
        todo = recipe.pending(rt, run.project, run.pipeline, run.host)
        assert [t.label for t in todo] == ["DEMO_S001_MR1", "DEMO_S002_MR1", "DEMO_S003_MR1"]
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(lambda t: cycle(rt, t), todo))
        counter = Counter(fresh_xnat_server)
        counter.reset()
        assert recipe.pending(rt, run.project, run.pipeline, run.host) == []
        assert counter.total() == 1, "an unchanged project costs one listing"
    finally:
        rt.close()
