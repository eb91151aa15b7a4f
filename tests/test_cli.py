"""The ``x2c`` command line (cli/main.py): help and errors, the seed form's dry run over the
real SSH host and SLURM (prints the sbatch line, the transfers and the script; changes nothing
on XNAT or the host), the seed form for real on this machine, and ``run``/``status`` over a
project where one job fails (exit code 1, the reason in the table)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cli.main import build_parser, main
from cli.settings import seed_settings
from tests.fixtures.cluster import Cluster
from tests.fixtures.xnat_data import Requests, add_broken_session
from tests.fixtures.xnat_server import XnatServer
from x2c import recipe
from x2c.config import XnatConfig
from x2c.schedulers import JobId
from x2c.settings import load_settings, parse_settings, xnat_config
from x2c.xnat import connect, resource_status

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)


def write_cfg(path: Path, server: XnatServer) -> Path:
    """A pyxnat .cfg (JSON) with the server's password, readable by its owner only."""
    path.touch(mode=0o600)
    path.write_text(
        json.dumps({"server": server.url, "user": server.user, "password": server.password})
    )
    return path


def x2c_env(home: Path) -> dict[str, str]:
    """The environment of a new user's x2c (own HOME and Prefect home)."""
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(ROOT),
    )
    return env


def x2c(*argv: str, home: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the console script's module as a new user would (own HOME and Prefect home)."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *argv],
        capture_output=True,
        text=True,
        env=x2c_env(home),
        cwd=ROOT,
        timeout=timeout,
    )


def writes(server: XnatServer) -> dict[str, int]:
    """Requests that could change the server (anything but GET/HEAD), by route."""
    return {
        route: n
        for route, n in server.request_counts().items()
        if not route.startswith(("GET ", "HEAD ")) and " /x2c/" not in route
    }


def test_help_starts_without_prefect() -> None:
    probe = "import sys, cli.main; cli.main.build_parser(); print('prefect' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "False"
    for argv in ([], ["run"], ["status"], ["demo"], ["devxnat"]):
        help_run = subprocess.run(
            [sys.executable, "-m", "cli.main", *argv, "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert help_run.returncode == 0, help_run.stderr
        assert "usage: x2c" in help_run.stdout


def test_errors_are_one_line_with_exit_code_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], xnat_server: XnatServer
) -> None:
    cfg = write_cfg(tmp_path / "xnat.cfg", xnat_server)
    cases = [
        (["--config", str(tmp_path / "nope.cfg"), "--experiment", "E", "--host", "local",
          "--output", str(tmp_path / "w")], "nope.cfg: no such file"),
        (["--config", str(cfg), "--experiment", "NOPE", "--host", "local", "--output",
          str(tmp_path / "w"), "--dry-run"], "'NOPE'"),
        (["status", "--settings", str(tmp_path / "none.yaml")], "cannot read settings file"),
    ]  # fmt: skip
    for argv, expected in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("x2c: error: ") and err.count("\n") == 1, err
        assert expected in err and xnat_server.password not in err
    with pytest.raises(SystemExit) as exc:
        main(["--experiment", "E"])
    assert exc.value.code == 2
    assert "the seed form needs --host" in capsys.readouterr().err


def test_bad_invocations_say_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    dead = tmp_path / "dead.cfg"  # nothing listens on port 1: contacting XNAT would fail slowly
    dead.write_text(json.dumps({"server": "http://127.0.0.1:1", "user": "u", "password": "p"}))
    seed = ["--config", str(dead), "--experiment", "E", "--host", "local", "--output", "w"]
    cases = [
        # an unknown pipeline fails before XNAT is contacted (no retry warnings, one line)
        ([*seed, "--pipeline", "nosuch", "--dry-run"], "--pipeline nosuch: no shipped pipeline"),
        (["status"], f"x2c.yaml: no such file in {tmp_path}; give --settings FILE"),
    ]
    for argv, expected in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("x2c: error: ") and err.count("\n") == 1, err
        assert expected in err, err
    usage = [
        (["demo", "--sessions", "0"], "x2c demo: error: argument --sessions: must be 1 or more"),
        ([*seed, "run"], "--experiment and --config belong to the seed form, not to x2c run"),
    ]
    for argv, expected in usage:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and err.startswith("usage: x2c"), err


def test_the_next_pass_comes_soon_when_an_upload_waits_for_its_verification() -> None:
    """``x2c run`` spaces passes by the jobs' ages, but an upload is verified by the next
    pass: that one comes at the floor, not an hour-old job's tenth."""
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    from cli.runs import next_interval
    from x2c.reconcile import Row

    hours_ago = (datetime.now(UTC) - timedelta(hours=5)).isoformat()
    running = Row("P", "E1", "L1", "demo", "local", "in flight", action="attach", since=hours_ago)
    assert next_interval([running], 2.0, 60.0) == 60.0
    uploaded = replace(running, experiment="E2", action="verify")
    assert next_interval([running, uploaded], 2.0, 60.0) == 2.0


def test_seed_form_takes_a_pipeline_file_or_a_listed_files_name(tmp_path: Path) -> None:
    pipe = tmp_path / "mine.yaml"
    pipe.write_text(
        yaml.safe_dump(
            {
                "name": "mine",
                "version": "1",
                "inputs": {"scan_types": ["T1*"], "resource": "NIFTI", "pick": "first"},
                "input_match": "*.nii*",
                "image": "none",
                "runtime": "none",
                "command": ["true"],
                "walltime": "00:05:00",
                "outputs": ["out.txt"],
                "archive": "MINE",
                "resource": "MINE",
            }
        )
    )
    cfg = tmp_path / "xnat.cfg"
    cfg.write_text(json.dumps({"server": "http://127.0.0.1:1", "user": "u", "password": "p"}))
    listed = tmp_path / "x2c.yaml"
    listed.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": "http://127.0.0.1:1", "user": "u"},
                "hosts": {"local": {"workdir": str(tmp_path / "w")}},
                "pipelines": [str(pipe)],
            }
        )
    )
    env = {"HOME": str(tmp_path)}
    seed = ["--experiment", "E", "--host", "local", "--output", str(tmp_path / "w")]
    for extra in (
        ["--config", str(cfg), "--pipeline", str(pipe)],  # a file, no settings file
        ["--settings", str(listed), "--pipeline", "mine"],  # the name of a listed file
        ["--settings", str(listed), "--pipeline", "demo"],  # a shipped one beside it
    ):
        args = build_parser().parse_args([*seed, *extra])
        settings, name = seed_settings(args, env)
        assert settings.pipeline(name).name == name, extra
    assert name == "demo" and len(settings.pipelines) == 2


def test_a_failed_batch_prints_its_reason_without_a_traceback(
    tmp_path: Path, xnat_server: XnatServer
) -> None:
    settings = tmp_path / "x2c.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "xnat": {"config": str(write_cfg(tmp_path / "xnat.cfg", xnat_server))},
                "hosts": {"local": {"workdir": str(tmp_path / "work")}},
                "pipelines": ["demo"],
            }
        )
    )
    done = x2c("run", "--settings", str(settings), "NOPE", "--pipeline", "demo", "--host",
               "local", "--quick", home=tmp_path)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("x2c: error:")]
    assert "XnatNotFoundError" in line and "'NOPE'" in line, line
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.cluster
def test_seed_dry_run_prints_the_plan_and_changes_nothing(
    tmp_path: Path, xnat_server: XnatServer, cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = write_cfg(tmp_path / "xnat.cfg", xnat_server)
    scratch = tmp_path / "scratch"  # the cluster's sshd runs on this machine: same filesystem
    xnat_server.reset_counts()
    out = io.StringIO()
    code = main(
        [
            "--config",
            str(cfg),
            "--experiment",
            "X2C_E00001",
            "--host",
            cluster.alias,
            "--ssh-config",
            str(cluster.ssh_config),
            "--output",
            str(scratch),
            "--dry-run",
        ],
        out=out,
    )
    text = out.getvalue()
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0].startswith("# freesurfer6-hippocampal for DEMO/DEMO_S001_MR1 (X2C_E00001)")
    assert any(line.startswith("decide: submit") for line in lines)
    transfer = [line for line in lines if line.startswith("transfer: ")]
    assert len(transfer) == 1 and "/scans/1/resources/NIFTI/files/T1.nii" in transfer[0]
    assert f"{cluster.alias}:{scratch}/freesurfer6-hippocampal/X2C_E00001/inputs/" in transfer[0]
    submit = [line for line in lines if line.startswith("submit: sbatch ")]
    assert len(submit) == 1 and "--parsable" in submit[0] and "job.sh" in submit[0]
    script = [line[4:] for line in lines if line.startswith("  | ")]
    assert script[0] == "#!/usr/bin/env bash"
    assert any("recon-all" in line and "-hippocampal-subfields-T1" in line for line in script)
    assert any(line.startswith("upload: ") and "FS6_HIPPO" in line for line in lines)
    assert xnat_server.password not in text
    # nothing changed: no write on XNAT, nothing on the host
    assert writes(xnat_server) == {}
    assert not scratch.exists()
    with connect(
        XnatConfig(url=xnat_server.url, user=xnat_server.user, password=xnat_server.password)
    ) as session:
        assert not resource_status(session, "X2C_E00001", "FS6_HIPPO", "6.0.1-x2c.1").done


def test_seed_form_runs_one_experiment_here(tmp_path: Path, fresh_xnat_server: XnatServer) -> None:
    server = fresh_xnat_server
    cfg = write_cfg(tmp_path / "xnat.cfg", server)
    work = tmp_path / "work"
    done = x2c(
        "--config", str(cfg), "--experiment", "X2C_E00002", "--host", "local",
        "--output", str(work), "--pipeline", "demo", "--container-runtime", "none", "--keep",
        home=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert server.password not in done.stdout + done.stderr
    assert "x2c: demo for DEMO/DEMO_S002_MR1 (X2C_E00002) on local" in done.stdout
    assert "[1] DEMO/DEMO_S002_MR1: done (job " in done.stdout
    row = next(line for line in done.stdout.splitlines() if line.startswith("DEMO/DEMO_S002_MR1"))
    assert (
        re.search(r"\bdone\b", row) and "/data/experiments/X2C_E00002/resources/DEMO_STATS" in row
    )
    assert "Traceback" not in done.stderr
    # --keep: the job directory stays, with the job's own record of its run
    run_env = (work / "demo" / "X2C_E00002" / "run.env").read_text()
    assert "exit_code=0" in run_env
    with connect(XnatConfig(url=server.url, user=server.user, password=server.password)) as session:
        status = resource_status(session, "X2C_E00002", "DEMO_STATS", "1.0.0")
        assert status.done, status.reason
        assert status.provenance is not None
        prov = status.provenance
        assert prov["pipeline"]["name"] == "demo" and prov["job"]["scheduler"] == "local"
        assert prov["job"]["exit_code"] == 0 and prov["source"]["experiment"] == "DEMO_S002_MR1"

    # the seed form again on the done experiment, from a machine with no ledger: the
    # experiment's lookup 1, the pass's listing 1 and the result's status 1 (its files: the
    # provenance's mark tells), plus the one login
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server.reset_counts()
    again = x2c(
        "--config", str(write_cfg(elsewhere / "xnat.cfg", server)), "--experiment", "X2C_E00002",
        "--host", "local", "--output", str(elsewhere / "work"), "--pipeline", "demo",
        "--container-runtime", "none", home=elsewhere,
    )  # fmt: skip
    assert again.returncode == 0 and "done" in again.stdout, again.stdout + again.stderr
    counts = Requests(server).counts()
    logins = sum(n for route, n in counts.items() if "JSESSION" in route)
    assert logins == 1 and sum(counts.values()) - logins == 3, sorted(counts.items())
    assert writes(server) == {}, "nothing written for a done experiment"


def test_run_reports_a_failure_and_status_shows_it(
    tmp_path: Path, fresh_xnat_server: XnatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fresh_xnat_server
    broken = add_broken_session(server, "DEMO", "BROKEN")
    settings = tmp_path / "x2c.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": server.url, "user": server.user},
                "hosts": {
                    "local": {
                        "workdir": str(tmp_path / "work"),
                        "scheduler": {"kind": "local", "poll_min_s": 0.2, "poll_max_s": 0.5},
                        "path_prepend": [VENV_BIN],
                    }
                },
                "pipelines": ["demo"],
                "projects": [{"project": "DEMO", "pipeline": "demo", "host": "local"}],
            }
        )
    )
    monkeypatch.setenv("XNAT_PASS", server.password)
    monkeypatch.setenv("HOME", str(tmp_path))

    before = io.StringIO()
    assert main(["status", "--settings", str(settings)], out=before) == 0
    rows_before = [line for line in before.getvalue().splitlines() if line.startswith("DEMO/")]
    assert len(rows_before) == 4 and all("not started" in r for r in rows_before), rows_before

    done = x2c("run", "--settings", str(settings), "DEMO", home=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert server.password not in done.stdout + done.stderr
    assert len(re.findall(r"^  \[\d\] DEMO/", done.stdout, re.M)) == 4, done.stdout
    assert "4 experiment(s): 3 done, 0 skipped, 1 failed" in done.stdout
    assert "DEMO/BROKEN_MR1: " in done.stdout.split("failed:", 1)[1]  # reason + log tail

    after = io.StringIO()
    assert main(["status", "--settings", str(settings)], out=after) == 1
    rows = {line.split()[0]: line for line in after.getvalue().splitlines() if "/" in line}
    assert all(" done " in rows[f"DEMO/DEMO_S00{k}_MR1"] for k in (1, 2, 3)), rows
    assert " failed " in rows["DEMO/BROKEN_MR1"] and "exit" in rows["DEMO/BROKEN_MR1"], rows
    assert broken


def test_readme_settings_example_is_what_the_loader_accepts() -> None:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert block is not None
    settings = parse_settings(block.group(1), source="README.md", home=Path("/home/u"))
    assert settings.hosts["hpc"].scheduler.kind == "slurm"
    assert [p.project for p in settings.projects] == ["ADNI"]
    assert "bash scripts/demo.sh" in text.split("## Layout")[0]
    assert "bash scripts/test.sh" in text.split("## Layout")[0]


def test_demo_processes_every_session_and_exits_0(tmp_path: Path) -> None:
    done = x2c("demo", "--sessions", "3", "--runtime", "none", "--dir", str(tmp_path / "d"),
               home=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "x2c demo: XNAT-compatible server on http://127.0.0.1:" in out
    rows = [line for line in out.splitlines() if line.startswith("DEMO/DEMO_S00")]
    assert len(rows) == 3 and all(re.search(r"\bdone\b", r) for r in rows), out
    assert all("/resources/DEMO_STATS" in r for r in rows)
    assert "3 experiment(s): 3 done, 0 skipped, 0 failed" in out
    assert "Traceback" not in done.stderr
    password = (tmp_path / "d" / "devxnat.password").read_text()
    assert password and password not in out + done.stderr
    cfg = tmp_path / "d" / "xnat.cfg"
    assert cfg.stat().st_mode & 0o077 == 0  # the demo's pyxnat .cfg is its owner's only


def test_status_shows_a_job_in_flight_with_its_id(
    tmp_path: Path, xnat_server: XnatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = tmp_path / "sleepy.yaml"
    pipe.write_text(
        yaml.safe_dump(
            {
                "name": "sleepy",
                "version": "1",
                "inputs": {"scan_types": ["T1*"], "resource": "NIFTI", "pick": "first"},
                "input_match": "*.nii*",
                "image": "none",
                "runtime": "none",
                "command": ["sleep", "60"],
                "walltime": "00:05:00",
                "outputs": ["never.txt"],
                "archive": "SLEEPY",
                "resource": "SLEEPY",
            }
        )
    )
    settings_path = tmp_path / "x2c.yaml"
    settings_path.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": xnat_server.url, "user": xnat_server.user},
                "hosts": {"local": {"workdir": str(tmp_path / "work")}},
                "pipelines": [str(pipe)],
            }
        )
    )
    monkeypatch.setenv("XNAT_PASS", xnat_server.password)
    monkeypatch.setenv("HOME", str(tmp_path))
    argv = ["--settings", str(settings_path), "DEMO", "DEMO_S001_MR1"]
    where = ["--pipeline", "sleepy", "--host", "local"]
    detached = io.StringIO()
    assert main(["run", "--detach", *argv, *where], out=detached) == 0, detached.getvalue()
    assert "x2c: submitted 1 job(s)" in detached.getvalue()
    job = re.search(r"DEMO/DEMO_S001_MR1: job (\S+) on local", detached.getvalue())
    assert job is not None, detached.getvalue()
    try:
        out = io.StringIO()
        assert main(["status", *argv, *where], out=out) == 0, out.getvalue()
        row = next(line for line in out.getvalue().splitlines() if line.startswith("DEMO/"))
        assert " in flight " in row and job.group(1) in row, row
        again = io.StringIO()
        assert main(["status", *argv, *where], out=again) == 0
        assert again.getvalue() == out.getvalue(), "status changes nothing"
    finally:
        settings = load_settings(settings_path, env=os.environ)
        rt = recipe.Runtime(settings, xnat_config(settings, env=os.environ))
        rt.scheduler("local").cancel([JobId(job.group(1))])
        rt.close()


def test_two_runs_on_one_experiment_make_one_job_and_one_upload(
    tmp_path: Path, fresh_xnat_server: XnatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ``x2c run PROJECT EXP`` started at the same instant (a watcher's and a manual one):
    one job, one upload, both exit 0, and one of them says another run handles it."""
    server = fresh_xnat_server
    settings = tmp_path / "x2c.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": server.url, "user": server.user},
                "hosts": {
                    "local": {
                        "workdir": str(tmp_path / "work"),
                        "scheduler": {"kind": "local", "poll_min_s": 0.2, "poll_max_s": 0.5},
                        "path_prepend": [VENV_BIN],
                    }
                },
                "pipelines": ["demo"],
                "projects": [{"project": "DEMO", "pipeline": "demo", "host": "local"}],
            }
        )
    )
    monkeypatch.setenv("XNAT_PASS", server.password)
    server.reset_counts()
    argv = [sys.executable, "-m", "cli.main", "run", "--settings", str(settings), "--quick"]
    for k in (1, 2):
        (tmp_path / f"user{k}").mkdir()
    runs = [
        subprocess.Popen(
            [*argv, "DEMO", "DEMO_S001_MR1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=x2c_env(tmp_path / f"user{k}"),
            cwd=ROOT,
        )
        for k in (1, 2)
    ]
    outs = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, outs, strict=True):
        assert run.returncode == 0, out + err
        assert "1 experiment(s): 1 done, 0 skipped, 0 failed" in out, out
        assert "Traceback" not in err, err
    jobs = [d for d in (tmp_path / "work" / ".x2c-local").iterdir() if (d / "tag").is_file()]
    assert len(jobs) == 1, "one job for the experiment"
    assert Requests(server).uploads() == 2, writes(server)  # the archive and its provenance
    # one did the work; the other saw another run at it, or found the result done
    [worker] = [out for out, _ in outs if "result uploaded and verified" in out]
    [other] = [out for out, _ in outs if out is not worker]
    assert "another run" in other or "is on XNAT" in other, other


def test_sigterm_ends_a_run_promptly_and_the_next_run_finishes_its_jobs(
    tmp_path: Path, fresh_xnat_server: XnatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run stopped with SIGTERM while its jobs hold ends within seconds, in one line, leaving
    no process of its own behind (Prefect's temporary server included); its jobs keep running
    and the next run collects them, one job per experiment."""
    from tests.flows.helpers import claims_on, hold_pipeline, poll

    server = fresh_xnat_server
    trace, release = tmp_path / "trace", tmp_path / "release"
    pipe = hold_pipeline(tmp_path / "hold.yaml", trace, release)
    settings = tmp_path / "x2c.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "xnat": {"url": server.url, "user": server.user},
                "hosts": {
                    "local": {
                        "workdir": str(tmp_path / "work"),
                        "scheduler": {"kind": "local", "poll_min_s": 0.2, "poll_max_s": 0.5},
                    }
                },
                "pipelines": [str(pipe)],
                "projects": [{"project": "DEMO", "pipeline": "hold", "host": "local"}],
            }
        )
    )
    monkeypatch.setenv("XNAT_PASS", server.password)
    argv = [sys.executable, "-m", "cli.main", "run", "--settings", str(settings), "--quick"]
    run = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=x2c_env(tmp_path), cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    try:
        poll(lambda: claims_on(tmp_path / "work") == 3, "the run to submit its jobs", timeout=180)
        started = time.monotonic()
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=60)  # returns only once no process holds its pipes
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert time.monotonic() - started < 30
    assert run.returncode == 128 + signal.SIGTERM, out + err
    [line] = [x for x in err.splitlines() if x.startswith("x2c:")]
    assert "stopped by SIGTERM" in line and "Traceback" not in err, err
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, 0)
        raise AssertionError("a process of the stopped run is still running")

    release.touch()
    done = x2c("run", "--settings", str(settings), "--quick", home=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 experiment(s): 3 done, 0 skipped, 0 failed" in done.stdout
    jobs = [d for d in (tmp_path / "work" / ".x2c-local").iterdir() if (d / "tag").is_file()]
    assert len(jobs) == 3, "the stopped run's jobs were collected, not submitted again"
