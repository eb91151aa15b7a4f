"""The recipe run in reconcile passes without Prefect, against the real devxnat server, the local
host and the local scheduler, with the demo pipeline run bare (runtime none) by this venv's
python. Crashes are simulated by calling the steps partway, one test per row of the crash
table in x2c/recipe/__init__.py; the next passes must finish with exactly one job and one upload."""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import ROOT
from tests.fixtures.xnat_data import Requests, add_session, put, xnat_config
from tests.x2c.helpers import (
    BEFORE_THE_JOB_ID,
    DATA,
    STALE_S,
    VENV_BIN,
    claim,
    crash_at,
    drive,
    ended,
    finish_after_crash,
    jobdir_of,
    local_host,
    local_jobs,
    make_settings,
    record_submitting,
    row_of,
    scope_for,
    stale_claim,
    target_for,
    until,
)
from tests.x2c.schedulers.conftest import job_script
from x2c import claims, recipe, reconcile
from x2c.config import SchedulerConfig
from x2c.devxnat.demo import nifti_bytes
from x2c.errors import NothingToProcessError, PipelineError
from x2c.plan import plan
from x2c.recipe import Runtime, Target, registry
from x2c.reconcile import Row, ScopeEntry
from x2c.xnat import XnatSession, connect, experiment_contents, path_of, resource_status


@pytest.fixture
def rt(xnat_server: Any, tmp_path: Path) -> Iterator[Runtime]:
    host = local_host(tmp_path, claim_stale_s=STALE_S)
    runtime = Runtime(make_settings(xnat_server, tmp_path, host), xnat_config(xnat_server))
    yield runtime
    runtime.close()


@pytest.fixture
def project(xnat_server: Any) -> str:
    return str(xnat_server.new_project("RCP"))


@pytest.fixture
def requests(xnat_server: Any, rt: Runtime) -> Requests:
    assert rt.xnat is not None  # log in outside the counts
    return Requests(xnat_server)


def session(rt: Runtime, xnat_server: Any, project: str, label: str, **kw: Any) -> Target:
    """A new MR session ``label`` (subject ``<label>_S``) and its demo target."""
    eid = add_session(xnat_server, project, f"{label}_S", label, **kw)
    return target_for(rt, project, eid)


def files_of(s: XnatSession, eid: str, resource: str = "DEMO_STATS") -> list[dict[str, Any]]:
    """The resource's file listing on XNAT, as XNAT lists it (name, size, digest...)."""
    rows = s.result_set(
        path_of("data", "experiments", eid, "resources", resource, "files"), what="list"
    )
    return sorted(rows, key=lambda r: str(r["Name"]))


def deletes(counts: dict[str, int]) -> int:
    """DELETE requests of any kind."""
    return sum(v for k, v in counts.items() if k.startswith("DELETE"))


def assert_one_job_one_upload(rt: Runtime, t: Target, job: str | None = None) -> None:
    """The experiment's verified result is on XNAT, made by its only job, and nothing else is
    left on the host."""
    status = resource_status(rt.xnat, t.experiment, "DEMO_STATS", "1.0.0")
    assert status.done, status.reason
    jobs = local_jobs(rt, t)
    assert len(jobs) == 1, jobs
    assert status.provenance is not None and status.provenance["job"]["job_id"] == jobs[0]
    if job is not None:
        assert jobs == [job]
    names = [r["Name"] for r in files_of(rt.xnat, t.experiment)]
    assert names == ["DEMO_STATS.zip", "provenance.json"]
    assert not Path(jobdir_of(rt, t).root).exists()
    assert not any(claims.scan(rt.host(t.host), rt.host_config(t.host).workdir))


# --- a full cycle, and a rerun that does nothing ---------------------------------------------


def test_full_cycle_uploads_a_verified_result_and_a_rerun_does_nothing(
    rt: Runtime,
    project: str,
    xnat_server: Any,
    requests: Requests,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    t = session(rt, xnat_server, project, "S1_MR1")
    assert (t.label, t.subject, t.project) == ("S1_MR1", "S1_MR1_S", project)

    requests.reset()
    first = reconcile.run_pass(rt, scope_for(t))
    assert [(r.state, r.action) for r in first] == [("in flight", "submit")]
    assert first[0].job_id == local_jobs(rt, t)[0]
    seen: list[list[Row]] = []
    [row] = drive(rt, scope_for(t), seen=seen)
    full_cycle = requests.total() - (1 + len(seen))  # less each pass's one listing
    assert (row.state, row.action) == ("done", "collect"), row
    assert row.xnat_uri == f"{xnat_server.url}/data/experiments/{t.experiment}/resources/DEMO_STATS"
    assert_one_job_one_upload(rt, t)

    status = resource_status(rt.xnat, t.experiment, "DEMO_STATS", "1.0.0")
    prov = status.provenance
    assert prov is not None
    assert prov["pipeline"]["name"] == "demo" and prov["pipeline"]["version"] == "1.0.0"
    assert prov["job"]["scheduler"] == "local" and prov["job"]["exit_code"] == 0
    assert prov["inputs"][0]["md5"] and prov["inputs"][0]["path"].endswith("T1.nii")
    assert prov["source"] == {
        "xnat": xnat_server.url,
        "project": project,
        "subject": "S1_MR1_S",
        "experiment": "S1_MR1",
    }
    blob = b"".join(
        rt.xnat.request(
            "GET",
            path_of(
                "data",
                "experiments",
                t.experiment,
                "resources",
                "DEMO_STATS",
                "files",
                "DEMO_STATS.zip",
            ),
            what="fetch",
        ).iter_content(1 << 16)
    )
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:  # the demo's real outputs
        assert sorted(zf.namelist()) == ["mask.nii.gz", "stats.json"]
        assert json.loads(zf.read("stats.json"))["mask_voxels"] > 0

    listed = files_of(rt.xnat, t.experiment)
    requests.reset()
    again = reconcile.run_pass(rt, scope_for(t))
    assert [(r.state, r.action) for r in again] == [("done", "skip_done")]
    assert requests.total() == 1, requests.counts()  # the listing; the ledger knows the rest
    assert requests.writes() == {}
    assert local_jobs(rt, t) == [first[0].job_id], "the rerun submitted nothing"
    rerun = requests.total()
    assert files_of(rt.xnat, t.experiment) == listed
    # check 1 (the experiment's document: no result resource, and the scans select reads);
    # select 1 (the chosen scan's files); stage 1 (one file); upload 2 (the archive, which
    # creates the resource, then the provenance); the next pass's verification 1 (the
    # result's listing against the provenance's md5s, which also settles the ledger)
    assert full_cycle == 6, requests.counts()
    assert [r.action for r in seen[-2]] == ["verify"], seen[-2]
    print(f"\nrequests: full cycle {full_cycle} (+1 listing per pass), rerun {rerun}")

    password = xnat_server.password
    assert password not in repr(t) and password not in caplog.text
    assert password not in json.dumps(prov)


def test_the_ledger_answers_a_done_project_with_one_listing(
    fresh_xnat_server: Any, tmp_path: Path
) -> None:
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
        scope = reconcile.scope_of(settings)
        rows = drive(rt, scope)
        assert [r.label for r in rows] == ["DEMO_S001_MR1", "DEMO_S002_MR1", "DEMO_S003_MR1"]
        assert {r.state for r in rows} == {"done"}
        requests = Requests(fresh_xnat_server)
        requests.reset()
        again = reconcile.run_pass(rt, scope)
        assert {r.action for r in again} == {"skip_done"}
        assert requests.total() == 1, requests.counts()  # an unchanged project: one listing
    finally:
        rt.close()


def test_nothing_to_process_names_the_reason_and_costs_nothing_again(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests
) -> None:
    t = session(rt, xnat_server, project, "N1_MR1", scan_type="DWI")
    [row] = reconcile.run_pass(rt, scope_for(t))
    assert (row.state, row.action) == ("skipped", "submit")
    assert "no scan of type T1*, *MPRAGE*" in row.reason and "DWI" in row.reason
    assert local_jobs(rt, t) == []
    with pytest.raises(NothingToProcessError):
        recipe.select(recipe.handle(rt, t))
    requests.reset()
    [again] = reconcile.run_pass(rt, scope_for(t))
    assert again.state == "skipped" and requests.total() == 1
    assert not any(claims.scan(rt.host("local"), rt.host_config("local").workdir))


# --- the crash table (x2c/recipe/__init__.py), one test per row ---------------------------


@pytest.mark.parametrize("point", BEFORE_THE_JOB_ID)
def test_a_pass_killed_before_the_job_id_was_recorded_is_finished_once_stale(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests, point: str
) -> None:
    """Rows "after claiming, during select/stage/build", "after submitting was recorded,
    before sbatch ran" and "after sbatch, before the registry got the job id": the claim
    without a job id is left alone until it is stale, then one pass takes it over, finds the
    job by its tag (``sbatch``) or launches again; one job, one upload."""
    t = session(rt, xnat_server, project, f"C_{point}")
    job = crash_at(rt, t, point)
    requests.reset()
    finish_after_crash(rt, t, "another run is staging and submitting it")
    assert requests.uploads() == 2, requests.counts()  # the archive and provenance
    assert_one_job_one_upload(rt, t, job)


def test_a_pass_killed_while_the_job_runs(
    rt: Runtime, project: str, xnat_server: Any, tmp_path: Path
) -> None:
    """Row "while the job runs": both local slots are held by other jobs, so the experiment's
    job stays queued; the next passes attach to it (one poll line), never submit again."""
    go = tmp_path / "go"
    hold = f"until [ -e {shlex.quote(str(go))} ]; do sleep 0.05; done"
    sched = rt.scheduler("local")
    for i in range(2):
        sched.submit(job_script(tmp_path / "blockers", f"b{i}", hold))
    t = session(rt, xnat_server, project, "C_running")
    claim(rt, t)
    launched = reconcile.launch(rt, t)  # the pass that submitted dies here
    assert (launched.state, launched.action) == ("in flight", "submit"), launched
    for _ in range(2):
        [row] = reconcile.run_pass(rt, scope_for(t))
        assert (row.state, row.action, row.job_id) == ("in flight", "attach", launched.job_id)
        assert row.reason == f"job {launched.job_id} is pending"
    assert local_jobs(rt, t) == [launched.job_id]
    go.touch()
    drive(rt, scope_for(t))
    assert_one_job_one_upload(rt, t, launched.job_id)


def test_a_pass_killed_after_the_job_ended_unrecorded(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    """Row "after the job ended, unrecorded": the next pass's poll judges it and uploads its
    result, the pass after verifies it."""
    t = session(rt, xnat_server, project, "C_ended")
    job = crash_at(rt, t, "ended")
    record = registry.read(recipe.handle(rt, t))
    assert record is not None and record.state == "PENDING"  # nobody polled it
    [row] = reconcile.run_pass(rt, scope_for(t))
    assert (row.state, row.action, row.job_id) == ("in flight", "verify", job), row
    [row] = reconcile.run_pass(rt, scope_for(t))
    assert (row.state, row.action, row.job_id) == ("done", "collect", job), row
    assert_one_job_one_upload(rt, t, job)


def test_a_pass_killed_mid_upload_is_redone_once_the_finishing_claim_is_stale(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests
) -> None:
    """Row "mid-upload": the resource has no provenance (INCOMPLETE); once the finishing claim
    is stale one pass uploads again, replacing the partial resource."""
    t = session(rt, xnat_server, project, "C_midupload")
    job = crash_at(rt, t, "mid-upload")
    assert not resource_status(rt.xnat, t.experiment, "DEMO_STATS", "1.0.0").done
    requests.reset()
    finish_after_crash(rt, t, "another run is uploading its result")
    assert requests.uploads() == 2, requests.counts()
    assert_one_job_one_upload(rt, t, job)


@pytest.mark.parametrize("point", ["uploaded", "upload-unrecorded"])
def test_a_pass_killed_after_the_upload_keeps_the_result_once_verified(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests, point: str
) -> None:
    """Row "after the upload, before the clean" (with the registry updated or not): the next
    pass verifies the result and keeps it exactly as it is; only the job directory is
    removed. With the registry updated, the result is known as this job's own."""
    t = session(rt, xnat_server, project, f"C_{point}")
    job = crash_at(rt, t, point)
    listed = files_of(rt.xnat, t.experiment)
    requests.reset()
    row = finish_after_crash(rt, t, "another run is uploading its result")
    assert (row.state, row.action) == ("done", "collect"), row
    own = "result uploaded and verified" if point == "uploaded" else "(uploaded by another run)"
    assert row.reason.endswith(own), row
    assert requests.writes() == {}, "the verified result was kept as it is"
    assert files_of(rt.xnat, t.experiment) == listed
    assert_one_job_one_upload(rt, t, job)


def test_an_upload_that_does_not_verify_is_uploaded_again_then_failed(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    """The next pass's check is the upload's verification: a result XNAT lists other than it
    was sent (damaged here between the passes) is uploaded again from Y, and after
    MAX_UPLOADS such uploads the job is failed with the reason. Nothing damaged is ever
    reported done, and the job directory stays until then."""
    t = session(rt, xnat_server, project, "V_damaged")
    archive = ("data", "experiments", t.experiment, "resources", "DEMO_STATS", "files")

    def uploaded() -> Row | None:
        row = row_of(reconcile.run_pass(rt, scope_for(t)), t)
        assert row.state != "done", row
        return row if row.action == "verify" else None

    for n in range(reconcile.MAX_UPLOADS):
        row = until(uploaded, f"upload {n + 1}")
        assert "the next pass verifies it" in row.reason, row
        record = registry.read(recipe.handle(rt, t))
        assert record is not None and (record.state, record.uploads) == ("uploaded", n + 1)
        put(
            rt.xnat,
            *archive,
            "DEMO_STATS.zip",
            params={"inbody": "true", "overwrite": "true"},
            body=b"not the archive that was sent",
        )
    [row] = reconcile.run_pass(rt, scope_for(t))
    assert (row.state, row.action) == ("failed", "collect"), row
    assert f"uploaded {reconcile.MAX_UPLOADS} times" in row.reason, row
    assert "DEMO_STATS.zip" in row.reason and "--retry-failed" in row.reason, row
    assert not resource_status(rt.xnat, t.experiment, "DEMO_STATS", "1.0.0").done
    assert len(local_jobs(rt, t)) == 1, "one job: only its upload was repeated"


def test_an_upload_damaged_once_is_uploaded_again_and_verified(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests
) -> None:
    t = session(rt, xnat_server, project, "V_once")
    until(
        lambda: row_of(reconcile.run_pass(rt, scope_for(t)), t).action == "verify",
        "the upload",
    )
    put(
        rt.xnat,
        *("data", "experiments", t.experiment, "resources", "DEMO_STATS", "files"),
        "DEMO_STATS.zip",
        params={"inbody": "true", "overwrite": "true"},
        body=b"damaged",
    )
    requests.reset()
    [again] = reconcile.run_pass(rt, scope_for(t))
    assert (again.state, again.action) == ("in flight", "verify"), again
    assert deletes(requests.counts()) == 1 and requests.uploads() == 2, requests.counts()
    [row] = drive(rt, scope_for(t))
    assert (row.state, row.action) == ("done", "collect"), row
    assert row.reason.endswith("result uploaded and verified"), row
    assert_one_job_one_upload(rt, t)


# --- passes at once ---------------------------------------------------------------------------


def _sessions(rt: Runtime, xnat_server: Any, project: str, n: int, prefix: str) -> list[Target]:
    for i in range(n):
        add_session(xnat_server, project, f"{prefix}{i}", f"{prefix}{i}_MR1", index=i + 1)
    return recipe.targets(rt, project, "demo", "local")


def _after_concurrent_passes(
    rt: Runtime, found: list[Target], requests: Requests, xnat_server: Any
) -> None:
    """One job and one upload per experiment; a second round at once changes nothing."""
    counts = requests.counts()
    assert requests.uploads() == 2 * len(found), counts
    assert deletes(counts) == 0, counts  # nothing was there to replace: nothing deleted
    listings = {}
    for t in found:
        assert_one_job_one_upload(rt, t)
        listings[t.experiment] = files_of(rt.xnat, t.experiment)
    requests.reset()
    for rows in _in_threads(rt, xnat_server, [ScopeEntry(found[0].project, "demo", "local")]):
        assert {r.action for r in rows} == {"skip_done"}
    assert requests.writes() == {}
    assert {t.experiment: files_of(rt.xnat, t.experiment) for t in found} == listings


def _in_threads(rt: Runtime, xnat_server: Any, scope: list[ScopeEntry]) -> list[list[Row]]:
    """Two orchestrators at once (a Runtime each: own XNAT session, own connection to Y), each
    running passes until the scope is final."""
    out: list[list[Row]] = [[], []]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(i: int) -> None:
        other = Runtime(rt.settings, xnat_config(xnat_server))
        try:
            start.wait()
            out[i] = drive(other, scope)
        except BaseException as exc:
            errors.append(exc)
        finally:
            other.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=180)
    assert not errors, errors
    return out


def test_two_passes_at_once_in_threads(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests
) -> None:
    found = _sessions(rt, xnat_server, project, 4, "TT")
    requests.reset()
    results = _in_threads(rt, xnat_server, [ScopeEntry(project, "demo", "local")])
    assert all({r.state for r in rows} == {"done"} for rows in results), results
    _after_concurrent_passes(rt, found, requests, xnat_server)


def test_two_passes_at_once_take_a_stale_claim_over_once(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    t = session(rt, xnat_server, project, "TS_MR1")
    h = recipe.handle(rt, t)
    claim(rt, t)
    selection = recipe.select(h)
    recipe.stage(h, selection)
    record_submitting(rt, t, recipe.build(h, selection))  # then the pass died
    stale_claim(rt, t)
    results = _in_threads(rt, xnat_server, scope_for(t))
    assert [[r.state for r in rows] for rows in results] == [["done"], ["done"]], results
    assert_one_job_one_upload(rt, t)


def test_a_claim_removed_after_the_scan_is_not_taken_over(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    """A pass's scan found a claim abandoned; before its takeover, the job directory was
    removed (another pass verified the result and cleaned). The takeover grants nothing and
    makes nothing: recreating the claim launched a second job without checking XNAT."""
    t = session(rt, xnat_server, project, "TR_MR1")
    claim(rt, t)
    cfg, host = rt.host_config("local"), rt.host("local")
    rel = claims.relpath(cfg.workdir, t.pipeline, t.experiment)
    found = stale_claim(rt, t)
    assert claims.remove(host, cfg.workdir, rel) is None
    got = claims.reserve(host, cfg.workdir, cap=10, stale_s=STALE_S, take_over=[found])
    assert got == claims.Granted((), (), gone=(rel,))
    # as a pass meets it: a pending row that says why, and no document kept for a later launch
    rt.documents.put(t.experiment, experiment_contents(rt.xnat, t.experiment))
    survey = reconcile.Survey([t], take_over={"local": [(t, found)]})
    granted, [row] = reconcile.claim_places(rt, survey)
    assert granted == [] and row.state == "pending"
    assert "claim on local was released meanwhile" in row.reason, row
    assert rt.documents.take(t.experiment) is None
    assert not Path(jobdir_of(rt, t).root).exists()
    assert list((Path(cfg.workdir) / claims.TRASH).iterdir()) == []
    assert claims.scan(host, cfg.workdir) == {}


def test_a_stale_claim_renewed_after_the_scan_is_left_to_its_run(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    """A pass's scan found a claim stale; before its takeover, the run holding it renewed it
    (it was slow, not dead). Nothing is granted and the row says so."""
    t = session(rt, xnat_server, project, "TN_MR1")
    claim(rt, t)
    cfg, host = rt.host_config("local"), rt.host("local")
    rel = claims.relpath(cfg.workdir, t.pipeline, t.experiment)
    found = stale_claim(rt, t)
    claims.renew(host, jobdir_of(rt, t))
    survey = reconcile.Survey([t], take_over={"local": [(t, found)]})
    granted, [row] = reconcile.claim_places(rt, survey)
    assert granted == [] and row.state == "pending"
    assert "claim on local was renewed, or taken over by another run" in row.reason, row
    assert claims.scan(host, cfg.workdir)[rel].age_s < STALE_S


def test_a_removal_sweeps_what_a_killed_removal_left_in_the_trash_long_ago(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    """A removal killed while deleting leaves its directory in the trash: the next removal
    deletes it once it is older than the sweep age, and leaves a younger one (a deletion that
    may still be running) alone."""
    cfg, host = rt.host_config("local"), rt.host("local")
    trash = Path(cfg.workdir) / claims.TRASH
    old, young = trash / "killedA1" / "demo", trash / "runningB2" / "demo"
    for left in (old, young):
        (left / "out").mkdir(parents=True)
        (left / "out" / "big.nii").write_bytes(b"x" * 1000)
    long_ago = time.time() - claims.TRASH_SWEEP_MIN * 60 - 120
    os.utime(old.parent, (long_ago, long_ago))
    t = session(rt, xnat_server, project, "TW_MR1")
    claim(rt, t)
    rel = claims.relpath(cfg.workdir, t.pipeline, t.experiment)
    assert claims.remove(host, cfg.workdir, rel) is None
    assert sorted(p.name for p in trash.iterdir()) == ["runningB2"]
    assert (young / "out" / "big.nii").is_file()


def test_an_upload_that_outlasts_the_stale_time_keeps_its_finishing_claim(
    rt: Runtime, project: str, xnat_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live pass renews its finishing claim while it uploads: a second pass that comes once
    the stale time has passed finds it held (a takeover uploaded a second time)."""
    t = session(rt, xnat_server, project, "TU_MR1")
    claim(rt, t)
    reconcile.launch(rt, t)
    until(lambda: ended(rt, t), "the job to end")
    cfg = rt.host_config("local")
    rel = claims.relpath(cfg.workdir, t.pipeline, t.experiment)
    upload, seen = recipe.upload, []

    def slow_upload(*args: Any, **kwargs: Any) -> None:
        start = time.monotonic()
        until(lambda: time.monotonic() - start > STALE_S + 1, "the stale time to pass")
        seen.append(claims.take_finishing(rt.host("local"), cfg.workdir, rel, stale_s=STALE_S))
        upload(*args, **kwargs)

    monkeypatch.setattr(recipe, "upload", slow_upload)
    assert [r.action for r in reconcile.run_pass(rt, scope_for(t))] == ["verify"]
    assert seen == [None], "the finishing claim of a live upload was taken over"
    monkeypatch.setattr(recipe, "upload", upload)
    assert [r.state for r in drive(rt, scope_for(t))] == ["done"]
    assert_one_job_one_upload(rt, t)


_CHILD = """
import json, sys
from pydantic import SecretStr
from tests.x2c.helpers import drive
from x2c.config import XnatConfig
from x2c.reconcile import ScopeEntry
from x2c.runtime import Runtime
from x2c.settings import Settings
given = json.loads(sys.stdin.read())
cfg = XnatConfig(url=given["url"], user=given["user"], password=SecretStr(given["password"]))
rt = Runtime(Settings.model_validate_json(given["settings"]), cfg)
rows = drive(rt, [ScopeEntry(given["project"], "demo", "local")], timeout=150)
print(json.dumps(sorted((r.experiment, r.state) for r in rows)))
rt.close()
"""


def test_two_passes_at_once_in_two_processes(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests
) -> None:
    """Two orchestrator processes share nothing but Y (claims, registry) and XNAT; the password
    reaches each on its stdin, never its command line."""
    found = _sessions(rt, xnat_server, project, 4, "PP")
    given = json.dumps(
        {
            "settings": rt.settings.model_dump_json(),
            "url": xnat_server.url,
            "user": xnat_server.user,
            "password": xnat_server.password,
            "project": project,
        }
    )
    requests.reset()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for _ in range(2)
    ]
    results = [c.communicate(given, timeout=200) for c in children]
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err[-3000:]
        assert json.loads(out) == sorted([t.experiment, "done"] for t in found)
    _after_concurrent_passes(rt, found, requests, xnat_server)


@pytest.mark.parametrize(
    ("limits", "most"),
    [
        ({"max_in_flight": 1}, "in flight"),
        ({"max_in_flight": 5, "max_submit_per_pass": 1}, "submit"),
    ],
)
def test_the_caps_in_flight_and_per_pass(
    rt: Runtime, project: str, xnat_server: Any, tmp_path: Path, limits: dict[str, int], most: str
) -> None:
    """``max_in_flight`` is counted from the claims on Y (never more than one experiment in
    flight at any pass), ``max_submit_per_pass`` caps each pass's submissions; the oldest
    sessions go first."""
    host = local_host(tmp_path, claim_stale_s=STALE_S, **limits)
    one = Runtime(make_settings(xnat_server, tmp_path, host), rt.xnat_config)
    try:
        found = _sessions(one, xnat_server, project, 3, "IF")
        scope = [ScopeEntry(project, "demo", "local")]
        first = reconcile.run_pass(one, scope)
        assert [(r.label, r.action) for r in first] == [
            ("IF0_MR1", "submit"),
            ("IF1_MR1", "wait"),
            ("IF2_MR1", "wait"),
        ], first
        assert sum("waiting for a place on local" in r.reason for r in first) == 2
        seen: list[list[Row]] = [first]
        drive(one, scope, seen=seen)
        if most == "in flight":
            assert all(sum(r.state == "in flight" for r in rows) <= 1 for rows in seen)
        else:
            assert all(sum(r.action == "submit" for r in rows) <= 1 for rows in seen)
        for t in found:
            assert len(local_jobs(one, t)) == 1
    finally:
        one.close()


# --- failures ---------------------------------------------------------------------------------


def test_a_failed_job_is_reported_again_not_resubmitted(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests
) -> None:
    eid = add_session(xnat_server, project, "F1", "F1_MR1")
    t = target_for(rt, project, eid, pipeline="failing")
    [row] = drive(rt, scope_for(t))
    assert (row.state, row.action) == ("failed", "ended"), row
    assert "ended FAILED (exit 3)" in row.reason and "boom on F1" in row.log_tail
    assert row.job_id == local_jobs(rt, t)[0]
    record = registry.read(recipe.handle(rt, t))
    assert record is not None and (record.state, record.exit_code) == ("FAILED", 3)

    requests.reset()
    for _ in range(2):
        [again] = reconcile.run_pass(rt, scope_for(t))
        assert (again.state, again.action) == ("failed", "report_failed"), again
        assert f"job {row.job_id} ended FAILED" in again.reason and "--retry-failed" in again.reason
    assert requests.total() == 2, "the ledger answers: one listing per pass"
    assert len(local_jobs(rt, t)) == 1

    [retried] = drive(rt, scope_for(t), retry_failed=True)
    assert retried.state == "failed" and retried.job_id != row.job_id
    assert len(local_jobs(rt, t)) == 2


def test_a_failed_job_is_resubmitted_when_its_inputs_change(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    eid = add_session(xnat_server, project, "G1", "G1_MR1")
    t = target_for(rt, project, eid, pipeline="failing")
    [row] = drive(rt, scope_for(t))
    assert row.state == "failed"
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
    changed = target_for(rt, project, eid, pipeline="failing")
    assert changed.last_modified != t.last_modified
    [rerun] = reconcile.run_pass(rt, scope_for(changed))
    assert (rerun.state, rerun.action) == ("in flight", "submit"), rerun
    assert len(local_jobs(rt, t)) == 2


def test_a_failure_unchanged_on_xnat_is_found_without_the_ledger(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    """The ledger is a cache: without it, the registry on Y still says the job failed and the
    inputs did not change, so the experiment is reported, not resubmitted."""
    eid = add_session(xnat_server, project, "G2", "G2_MR1")
    t = target_for(rt, project, eid, pipeline="failing")
    [row] = drive(rt, scope_for(t))
    for path in rt.ledger.root.glob("*.jsonl"):
        path.unlink()
    [again] = reconcile.run_pass(rt, scope_for(t))
    assert (again.state, again.action, again.job_id) == ("failed", "report_failed", row.job_id)
    assert "boom on G2" in again.log_tail
    assert len(local_jobs(rt, t)) == 1


def test_a_new_pipeline_version_is_recomputed(rt: Runtime, project: str, xnat_server: Any) -> None:
    eid = add_session(xnat_server, project, "V1", "V1_MR1")
    t = target_for(rt, project, eid)
    drive(rt, scope_for(t))
    settings = rt.settings.model_copy(
        update={"pipelines": (str(DATA / "demo-v2.yaml"),), "keep_workdir": True}
    )
    v2 = Runtime(settings, rt.xnat_config)
    try:
        t2 = target_for(v2, project, eid)
        [row] = reconcile.run_pass(v2, scope_for(t2))
        assert row.action == "submit", row
        [done] = drive(v2, scope_for(t2))
        assert done.state == "done"
        status = resource_status(v2.xnat, eid, "DEMO_STATS", "2.0.0")
        assert status.done and status.provenance is not None
        assert status.provenance["pipeline"]["version"] == "2.0.0"
        assert len(local_jobs(v2, t2)) == 2
        assert Path(jobdir_of(v2, t2).root).exists(), "keep_workdir keeps it"
        assert not any(claims.scan(v2.host("local"), v2.host_config("local").workdir))
    finally:
        v2.close()


def test_a_refused_submission_gives_its_place_back_at_once(
    rt: Runtime, project: str, xnat_server: Any, tmp_path: Path
) -> None:
    """The scheduler refused the job and holds none with its tag: the row says so, the claim
    and the ``submitting`` entry are gone, and the next pass submits again (no wait for the
    claim to go stale); once the cause is fixed, one job and one upload."""
    (tmp_path / "a file").write_text("")
    broken = SchedulerConfig(kind="local", local_state_dir=str(tmp_path / "a file" / "state"))
    host = local_host(tmp_path, claim_stale_s=600).model_copy(update={"scheduler": broken})
    refusing = Runtime(make_settings(xnat_server, tmp_path, host), rt.xnat_config)
    try:
        t = session(refusing, xnat_server, project, "SR_MR1")
        for _ in range(2):
            [row] = reconcile.run_pass(refusing, scope_for(t))
            assert (row.state, row.action) == ("failed", "submit"), row
            assert row.reason.startswith("SubmissionError: could not queue"), row
            assert row.reason.endswith("no job carries its tag: the next pass submits again")
            assert not any(claims.scan(refusing.host("local"), host.workdir))
            assert registry.read(recipe.handle(refusing, t)) is None
    finally:
        refusing.close()
    [done] = drive(rt, scope_for(t))
    assert done.state == "done"
    assert_one_job_one_upload(rt, t)


# --- data, secrets, the dry run -----------------------------------------------------------------


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
    [row] = drive(rt, scope_for(t))
    assert row.state == "done", row
    status = resource_status(rt.xnat, eid, "DEMO_STATS", "1.0.0")
    assert status.done and status.provenance is not None
    assert status.provenance["source"]["subject"] == subject
    workdir = Path(rt.host_config("local").workdir)
    assert not list(workdir.rglob("PWNED*")) and not list(tmp_path.rglob("PWNED*"))
    assert not Path("PWNED").exists()


def test_plan_shows_every_step_and_changes_nothing(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests
) -> None:
    t = session(rt, xnat_server, project, "D1_MR1")
    requests.reset()
    text = "\n".join(plan(rt, t))
    assert "decide: submit" in text
    assert (
        f"{xnat_server.url}/data/experiments/{t.experiment}/scans/1/resources/NIFTI/files/T1.nii"
        in text
    )
    assert "| #!/usr/bin/env bash" in text and "x2c.demo_pipeline" in text
    assert "submit: local job" in text and "clean: rm -rf" in text
    result = f"{xnat_server.url}/data/experiments/{t.experiment}/resources/DEMO_STATS"
    assert f"upload: PUT {result}/files/DEMO_STATS.zip <- " in text
    assert f"verify (the next pass): GET {result}/files " in text
    assert xnat_server.password not in text
    assert requests.writes() == {}
    assert not Path(jobdir_of(rt, t).root).exists()
    assert local_jobs(rt, t) == []
    assert not any(claims.scan(rt.host("local"), rt.host_config("local").workdir))
    assert not rt.ledger.root.exists()
    empty = session(rt, xnat_server, project, "D2_MR1", scan_type="DWI")
    assert plan(rt, empty)[-1].startswith("skip: nothing to process, because no scan of type")


def test_plan_attaches_to_a_job_recorded_as_running(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    """The dry run cannot poll, so it trusts the registry: a live job is attached to, never
    reported as failed and never submitted again."""
    t = session(rt, xnat_server, project, "R1_MR1")
    h = recipe.handle(rt, t)
    spec = recipe.build(h, recipe.select(h))
    record_submitting(rt, t, spec)
    record = registry.read(h)
    assert record is not None
    registry.write(h, record.model_copy(update={"job_id": "4242", "state": "RUNNING"}))
    lines = plan(rt, t)
    assert lines[1].startswith("decide: attach: job 4242 was last recorded as running"), lines
    assert not any(line.startswith("submit:") for line in lines), lines
    assert Path(spec.script_path).exists()


def test_the_job_script_never_holds_the_password(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    t = session(rt, xnat_server, project, "K1_MR1")
    h = recipe.handle(rt, t)
    selection = recipe.select(h)
    spec = recipe.build(h, selection)
    script = Path(spec.script_path).read_text()
    assert xnat_server.password not in script and xnat_server.url not in script
    assert f"export PATH={VENV_BIN}" in script
    # a password that appears in a label is refused rather than written
    hostile = Target(project, t.experiment, xnat_server.password, "S", "demo", "local")
    with pytest.raises(Exception, match="forbidden value"):
        recipe.build(recipe.handle(rt, hostile), selection)


def test_a_live_job_is_never_built_over_or_submitted_twice(
    rt: Runtime, project: str, xnat_server: Any, tmp_path: Path
) -> None:
    t = session(rt, xnat_server, project, "L1_MR1")
    h = recipe.handle(rt, t)
    selection = recipe.select(h)
    recipe.stage(h, selection)
    spec = recipe.build(h, selection)
    job = recipe.submit(h, spec)
    assert recipe.submit(h, spec) == job, "a second submit returns the queued job"
    with pytest.raises(PipelineError, match="attach to it"):
        recipe.build(h, selection)  # never pulls the script from under a live job
    assert local_jobs(rt, t) == [job]
    until(lambda: ended(rt, t), "the job to end")


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
        [row] = drive(rt, scope_for(t))
        assert row.state == "done", row
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


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``root`` with its size and modification time (ns)."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_read_only_survey_changes_nothing(
    rt: Runtime, project: str, xnat_server: Any, requests: Requests
) -> None:
    """``x2c status`` surveys with mutate=False: it reports a job that ended unrecorded, a
    failure, a stale claim and a new session as they stand, and writes nothing anywhere (no
    registry entry, claim, ledger entry, scheduler launch or XNAT request that changes)."""
    done = session(rt, xnat_server, project, "Q1_MR1")
    drive(rt, scope_for(done))
    fails = target_for(rt, project, add_session(xnat_server, project, "Q2", "Q2_MR1"), "failing")
    drive(rt, scope_for(fails))
    ended_unrecorded = session(rt, xnat_server, project, "Q3_MR1")
    claim(rt, ended_unrecorded)
    reconcile.launch(rt, ended_unrecorded)
    until(lambda: ended(rt, ended_unrecorded), "the job to end")
    abandoned = session(rt, xnat_server, project, "Q4_MR1")
    claim(rt, abandoned)
    fresh = session(rt, xnat_server, project, "Q5_MR1")
    stale_claim(rt, abandoned)
    scope = [ScopeEntry(project, "demo", "local"), ScopeEntry(project, "failing", "local")]
    work, state = Path(rt.host_config("local").workdir), rt.settings.state_dir
    before = (_tree(work), _tree(state))
    requests.reset()
    found = reconcile.survey(rt, scope, mutate=False)
    rows = {(row.pipeline, row.label): row for row in found.rows.values()}
    assert requests.writes() == {}, requests.counts()
    assert (_tree(work), _tree(state)) == before
    assert not any(found.launch.values())
    assert rows[("demo", done.label)].state == "done"
    assert rows[("failing", fails.label)].state == "failed"
    assert rows[("demo", ended_unrecorded.label)].action == "collect"
    assert rows[("demo", abandoned.label)].state == "pending"
    assert rows[("demo", fresh.label)].reason == "not started"
    record = registry.read(recipe.handle(rt, ended_unrecorded))
    assert record is not None and record.state == "PENDING", "nothing recorded"


def test_a_corrupt_registry_entry_fails_its_experiment_only(
    rt: Runtime, project: str, xnat_server: Any
) -> None:
    """One damaged ``job.json`` on Y is reported (with what to do) for its experiment; every
    other experiment of the pass goes on."""
    broken = session(rt, xnat_server, project, "B1_MR1")
    fine = session(rt, xnat_server, project, "B2_MR1")
    registry = Path(jobdir_of(rt, broken).registry)
    registry.parent.mkdir(parents=True)
    registry.write_text("{not json")
    scope = [ScopeEntry(project, "demo", "local")]
    rows = reconcile.run_pass(rt, scope)
    bad, good = row_of(rows, broken), row_of(rows, fine)
    assert bad.state == "failed" and "is corrupt" in bad.reason and "remove it" in bad.reason
    assert (good.state, good.action) == ("in flight", "submit"), good
    registry.unlink()  # the user follows the advice
    rows = drive(rt, scope)
    assert {r.state for r in rows} == {"done"}
    assert len(local_jobs(rt, broken)) == len(local_jobs(rt, fine)) == 1
