"""No credential of the orchestrator reaches a job (issue 9, item 4).

``XNAT_PASS`` (the real devxnat password) and a fake API token are put in the orchestrator's
environment; a real job that dumps its environment (``env > outputs/env.txt``) then runs
through the recipe on every host kind available here: the local scheduler on this machine,
SLURM on this machine (sbatch run with the orchestrator's environment), and SLURM over SSH.
While the job waits for a go-file, every process of the job and of the local launcher and
watchdog is found in /proc and its environ read; then the job's environment dump, job.sh,
job.log, run.env, the scheduler's log, the local scheduler's saved env, SLURM's own stored
copy of the job's environment and every member of the archive are scanned. None may hold
either secret; the result is still uploaded."""

from __future__ import annotations

import os
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.cluster import STATE, Cluster
from tests.fixtures.xnat_data import add_session, xnat_config
from tests.x2c.helpers import QUICK, VENV_BIN, wait_for_job
from x2c import recipe
from x2c.config import HostConfig, SchedulerConfig
from x2c.jobscript import render_job_script
from x2c.pipelines import parse_pipeline
from x2c.recipe import Runtime
from x2c.settings import Settings, XnatSource
from x2c.xnat import resource_status

TOKEN = "x2c-fake-token-7f3a9c1e5b"

# runtime none: {outputs} is <job dir>/outputs, so the go-file is <job dir>/go
_DUMP = 'env > "$1/env.txt"; while [ ! -e "$1/../go" ]; do sleep 0.1; done'
ENVDUMP: dict[str, Any] = {
    "name": "envdump",
    "version": "1",
    "inputs": {"scan_types": ["T1*"], "resource": "NIFTI", "pick": "first"},
    "image": "none",
    "runtime": "none",
    "command": ["sh", "-c", _DUMP, "envdump", "{outputs}"],
    "walltime": "00:05:00",
    "outputs": ["env.txt"],
    "archive": "ENVDUMP",
    "resource": "ENVDUMP",
}


def _host(kind: str, tmp: Path, request: pytest.FixtureRequest) -> HostConfig:
    common: dict[str, Any] = {"name": "y", "path_prepend": (VENV_BIN,)}
    if kind == "local":
        sched = SchedulerConfig(kind="local", max_local_jobs=2, **QUICK)
        return HostConfig(workdir=str(tmp / "work"), scheduler=sched, **common)
    request.getfixturevalue("cluster")
    slurm = SchedulerConfig(kind="slurm", extra_args=("--oversubscribe",), **QUICK)
    if kind == "slurm-here":
        return HostConfig(workdir=str(tmp / "work"), scheduler=slurm, **common)
    cluster: Cluster = request.getfixturevalue("cluster")
    return HostConfig(
        ssh=cluster.alias,
        ssh_config=cluster.ssh_config,
        known_hosts=cluster.known_hosts,
        workdir=str(tmp / "scratch"),
        scheduler=slurm,
        **common,
    )


@pytest.fixture(
    params=[
        "local",
        pytest.param("slurm-here", marks=pytest.mark.cluster),
        pytest.param("slurm-ssh", marks=pytest.mark.cluster),
    ]
)
def rt(request: pytest.FixtureRequest, xnat_server: Any, tmp_path: Path) -> Iterator[Runtime]:
    path = tmp_path / "envdump.yaml"
    path.write_text(yaml.safe_dump(ENVDUMP))
    settings = Settings(
        xnat=XnatSource(url=xnat_server.url, user=xnat_server.user),
        hosts={"y": _host(request.param, tmp_path, request)},
        pipelines=(str(path),),
        state_dir=tmp_path / "state",
    )
    # the orchestrator's environment, as the CLI would have it
    os.environ["XNAT_PASS"] = xnat_server.password
    os.environ["X2C_FAKE_API_TOKEN"] = TOKEN
    runtime = Runtime(settings, xnat_config(xnat_server))
    yield runtime
    runtime.close()


def _processes_mentioning(*needles: str) -> dict[int, str]:
    """Processes whose command line names one of ``needles`` (a job dir, a state dir)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(n in cmdline for n in needles):
            found[int(entry.name)] = cmdline
    return found


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""  # ended between the listing and the read


def _wait_for(condition: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _slurm_stored_env(job_id: str) -> list[Path]:
    """slurmctld's saved copy of a batch job's environment (StateSaveLocation)."""
    return list((STATE / "slurm" / "state").glob(f"hash.*/job.{job_id}/environment"))


def test_no_secret_reaches_the_job_or_its_launchers(rt: Runtime, xnat_server: Any) -> None:
    secrets = [xnat_server.password.encode(), TOKEN.encode()]
    project = xnat_server.new_project("ENV")
    eid = add_session(xnat_server, project, "E1", "E1_MR1")
    [t] = recipe.targets(rt, project, "envdump", "y", [eid])
    h = recipe.handle(rt, t)
    jobdir = h.jobdir
    state_dir = rt.host_config("y").workdir + "/.x2c-local"
    selection = recipe.select(h)
    recipe.stage(h, selection)
    job = recipe.submit(h, recipe.build(h, selection))
    kind = rt.host_config("y").scheduler.kind

    env_txt = Path(jobdir.outputs) / "env.txt"
    _wait_for(lambda: env_txt.exists() and env_txt.stat().st_size > 0, "the job's env dump")
    scanned: dict[str, bytes] = {}
    processes = _processes_mentioning(jobdir.root, state_dir)
    for pid in processes:
        scanned[f"/proc/{pid}/environ"] = _environ(pid)
    if kind == "slurm":
        for path in _slurm_stored_env(job):
            scanned[str(path)] = path.read_bytes()
    Path(jobdir.root, "go").touch()
    record = wait_for_job(rt, t)
    assert record.state == "COMPLETED", record

    for path in (jobdir.script, jobdir.log, jobdir.run_info, jobdir.scheduler_log, str(env_txt)):
        scanned[path] = Path(path).read_bytes() if Path(path).exists() else b""
    for saved in Path(state_dir).glob("*/env"):
        scanned[str(saved)] = saved.read_bytes()
    archive = recipe.collect(h)
    with zipfile.ZipFile(Path(jobdir.root, archive.path)) as zf:
        for name in zf.namelist():
            scanned[f"archive:{name}"] = zf.read(name)
    leaks = [where for where, data in scanned.items() if any(s in data for s in secrets)]
    assert not leaks, f"a secret reached {leaks}"
    # the scan saw what it should: the job's shell, and the local launcher and watchdog
    commands = " | ".join(processes.values())
    assert f"{jobdir.script} --x2c-clean-env" in commands, commands
    if kind == "local":
        assert "x2c-launcher" in commands and "x2c-watchdog" in commands, commands
    else:
        assert any("environment" in k for k in scanned), "SLURM's stored job environment"
    job_env = env_txt.read_text()
    assert "PATH=" in job_env and "HOME=" in job_env
    if kind == "slurm":
        assert f"SLURM_JOB_ID={job}" in job_env  # the scheduler's own variables still arrive

    recipe.upload(h, archive)
    assert resource_status(rt.xnat, eid, "ENVDUMP", "1").done


def test_only_the_allow_list_and_passenv_reach_a_rendered_script(tmp_path: Path) -> None:
    """The job script itself, run by bash with a dirty environment: what the pipeline declares
    in passenv arrives, the secrets and everything else do not."""
    pipeline = parse_pipeline(
        {**ENVDUMP, "passenv": ["FS_LICENSE"], "command": ["sh", "-c", "env > env.txt"]}
    )
    job_dir = tmp_path / "job"
    (job_dir / "outputs").mkdir(parents=True)
    script = render_job_script(
        pipeline, job_dir=str(job_dir), subject="S", experiment="E1", inputs=[]
    )
    (job_dir / "job.sh").write_text(script)
    dirty = {
        "PATH": os.environ["PATH"],
        "HOME": "/root",
        "XNAT_PASS": "hunter2-password",
        "X2C_FAKE_API_TOKEN": TOKEN,
        "FS_LICENSE": "/opt/fs/license.txt",
        "SLURM_JOB_ID": "42",
        "BASH_FUNC_evil%%": "() { echo pwned; }",
    }
    done = subprocess.run(["bash", str(job_dir / "job.sh")], env=dirty, capture_output=True)
    assert done.returncode == 0, (done, (job_dir / "job.log").read_text())
    env = dict(
        line.split("=", 1)
        for line in (job_dir / "outputs" / "env.txt").read_text().splitlines()
        if "=" in line
    )
    assert env["FS_LICENSE"] == "/opt/fs/license.txt" and env["SLURM_JOB_ID"] == "42"
    assert env["HOME"] == "/root"
    assert not {"XNAT_PASS", "X2C_FAKE_API_TOKEN", "BASH_FUNC_evil%%"} & set(env)
