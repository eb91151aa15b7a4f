"""Job scripts: golden files for every shipped pipeline and runtime, and real executions with
bash (runtime none), podman and SLURM through LocalRunner.

Set X2C_TEST_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change; review the
diff before committing it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from fsspec.implementations.local import LocalFileSystem
from pydantic import SecretStr

from x2c import jobdir as jd
from x2c.archive_check import check_archive
from x2c.config import ContainerRuntime, XnatConfig
from x2c.containers import image_digest
from x2c.errors import PipelineError
from x2c.hosts.host import LocalHost
from x2c.hosts.local import LocalRunner
from x2c.jobscript import find_resume, job_argv, render_job_script, xnat_forbidden
from x2c.pipelines import Pipeline, builtin_pipeline, builtin_pipelines, parse_pipeline
from x2c.provenance import build_provenance
from x2c.sources import FileRef

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
RUNTIMES: list[ContainerRuntime] = ["apptainer", "singularity", "docker", "podman", "none"]
T1 = "scans/2-T1w/NIFTI/T1w.nii.gz"
VENV_BIN = str(Path(sys.executable).parent)  # python3 with numpy, nibabel and x2c


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("X2C_TEST_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with X2C_TEST_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", sorted(builtin_pipelines()))
def test_golden_scripts(name: str, runtime: ContainerRuntime) -> None:
    script = render_job_script(
        builtin_pipeline(name),
        job_dir=f"/scratch/x2c/{name}/XNAT_E00001",
        subject="sub-01",
        experiment="XNAT_E00001",
        inputs=[T1],
        runtime=runtime,
    )
    _golden(f"{name}.{runtime}.sh", script)
    completed = subprocess.run(["bash", "-n"], input=script.encode(), capture_output=True)
    assert completed.returncode == 0, completed.stderr


def test_golden_resume_script() -> None:
    script = render_job_script(
        builtin_pipeline("freesurfer6-hippocampal"),
        job_dir="/scratch/x2c/freesurfer6-hippocampal/XNAT_E00001",
        subject="sub-01",
        experiment="XNAT_E00001",
        inputs=[T1],
        resume="resources/FREESURFER6/files/sub-01.zip",
        runtime="apptainer",
    )
    _golden("freesurfer6-hippocampal.resume.apptainer.sh", script)
    assert "python3 -m zipfile -e inputs/resources/FREESURFER6/files/sub-01.zip outputs" in script
    assert "-i /x2c/inputs" not in script  # the fresh step is left out
    assert "-hippocampal-subfields-T1" in script


def test_job_argv_maps_paths_per_runtime() -> None:
    demo = builtin_pipeline("demo")
    common: dict[str, Any] = dict(job_dir="/w/demo/E1", subject="S", experiment="E1", inputs=[T1])
    assert job_argv(demo, runtime="podman", **common) == [
        ["python3", "-m", "x2c.demo_pipeline", f"/x2c/inputs/{T1}", "/x2c/outputs", "--label=S"]
    ]
    assert job_argv(demo, runtime="none", **common)[0][3:5] == [
        f"/w/demo/E1/inputs/{T1}",
        "/w/demo/E1/outputs",
    ]
    fs6 = builtin_pipeline("freesurfer6-hippocampal")
    steps = job_argv(fs6, runtime="apptainer", **common)
    assert steps == [
        ["recon-all", "-sd", "/x2c/outputs", "-s", "S", "-i", f"/x2c/inputs/{T1}", "-all",
         "-hippocampal-subfields-T1", "-openmp", "4"]
    ]  # fmt: skip
    with pytest.raises(PipelineError, match=r"matching '\*\.nii\*' .* none of the 0 staged"):
        job_argv(demo, runtime="none", **{**common, "inputs": []})
    # a sidecar listed first is not taken for the image
    sidecar = {**common, "inputs": ["scans/2-T1w/NIFTI/T1w.json", T1]}
    assert job_argv(demo, runtime="podman", **sidecar)[0][3] == f"/x2c/inputs/{T1}"
    with pytest.raises(PipelineError, match="none of the 1 staged"):
        job_argv(demo, runtime="podman", **{**common, "inputs": ["scans/2/DICOM/1.dcm"]})
    with pytest.raises(PipelineError, match="not a relative path inside"):
        job_argv(demo, runtime="none", **{**common, "inputs": ["../../etc/passwd"]})


def test_no_secret_or_xnat_address_reaches_a_script() -> None:
    demo = builtin_pipeline("demo")
    common: dict[str, Any] = dict(job_dir="/w/demo/E1", experiment="E1", inputs=[T1])
    with pytest.raises(PipelineError, match="http") as info:
        render_job_script(demo, subject="see https://xnat.example.org/data", **common)
    assert "xnat.example.org" not in str(info.value)
    with pytest.raises(PipelineError, match="credentials"):
        render_job_script(demo, subject="sftp://alice:hunter2@host/x", **common)
    with pytest.raises(PipelineError, match="forbidden value #2") as info:
        render_job_script(
            demo, subject="S-hunter2", forbidden=["xnat.example.org", "hunter2"], **common
        )
    assert "hunter2" not in str(info.value)
    script = render_job_script(demo, subject="S", forbidden=["hunter2", "alice"], **common)
    assert "hunter2" not in script
    cfg = XnatConfig(url="https://xnat.example.org/xnat", user="alice", password=SecretStr("pw-9"))
    assert xnat_forbidden(cfg) == ["pw-9", "https://xnat.example.org/xnat", "xnat.example.org"]
    for label in ("x-pw-9", "on xnat.example.org"):
        with pytest.raises(PipelineError, match="forbidden value"):
            render_job_script(demo, subject=label, forbidden=xnat_forbidden(cfg), **common)
    with pytest.raises(PipelineError, match="directive"):
        render_job_script(demo, subject="S", directives=["#SBATCH -J x\nrm -rf /"], **common)


# ---------------------------------------------------------------------------------------------
# Real executions


def _stage(workdir: Path, pipeline: str = "demo", experiment: str = "E1") -> jd.JobDir:
    d = jd.job_dir(str(workdir), pipeline, experiment)
    nifti = Path(d.input(T1))
    nifti.parent.mkdir(parents=True)
    data = np.zeros((16, 16, 16), np.float32)
    data[4:12, 4:12, 4:12] = 100.0
    data += np.random.default_rng(0).random(data.shape, dtype=np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(nifti))
    return d


def _run(d: jd.JobDir, script: str) -> int:
    Path(d.script).write_text(script)
    return LocalRunner().run(["bash", d.script], timeout=120).returncode


def _log(d: jd.JobDir) -> str:
    return Path(d.log).read_text()


def _check_demo_result(d: jd.JobDir, label: str) -> dict[str, Any]:
    assert jd.read_exit_code(LocalFileSystem(), d) == 0, _log(d)
    stats = json.loads(Path(d.outputs, "stats.json").read_text())
    assert stats["label"] == label
    assert stats["mask_voxels"] == 512 and stats["mask_volume_ml"] == pytest.approx(4.096)
    with zipfile.ZipFile(d.archive("DEMO_STATS.zip")) as zf:
        assert sorted(zf.namelist()) == ["mask.nii.gz", "stats.json"]
        assert json.loads(zf.read("stats.json")) == stats
    manifest = Path(d.manifest).read_text().splitlines()
    assert [line.split()[1] for line in manifest] == ["mask.nii.gz", "stats.json"]
    run = jd.read_run_info(LocalFileSystem(), d)
    assert run is not None and run.exit_code == 0 and run.node and run.started_at
    assert run.archive_size == Path(d.archive("DEMO_STATS.zip")).stat().st_size
    return stats


def test_hostile_labels_stay_inert_data(tmp_path: Path) -> None:
    canaries = [tmp_path / f"pwned{i}" for i in range(3)]
    subject = (
        f"a'b\"c $(touch {canaries[0]}) `touch {canaries[1]}` ../x\nline2 \\ ; "
        f"touch {canaries[2]} # $HOME ${{PATH}} * ?"
    )
    experiment = f"E1'; touch {canaries[2]}; '"
    workdir = tmp_path / "work dir 'q\" $(x) *"
    d = _stage(workdir, experiment=experiment)
    assert Path(d.root).parent == workdir / "demo"
    script = render_job_script(
        builtin_pipeline("demo"),
        job_dir=d.root,
        subject=subject,
        experiment=experiment,
        inputs=[T1],
        runtime="none",
        path_prepend=[VENV_BIN],
    )
    assert _run(d, script) == 0, _log(d)
    _check_demo_result(d, subject)  # byte-identical in the pipeline's argv
    assert not any(c.exists() for c in canaries)
    assert sorted(p.name for p in tmp_path.iterdir()) == [workdir.name]


def _custom(argv: list[str], outputs: list[str], fmt: str = "zip") -> Pipeline:
    return parse_pipeline(
        {
            "name": "custom",
            "version": "0",
            "inputs": {"scan_types": ["T1*"]},
            "image": "none",
            "command": argv,
            "outputs": outputs,
            "archive": "RESULT",
            "archive_format": fmt,
            "resource": "RESULT",
        }
    )


def test_exit_trap_records_a_failing_step(tmp_path: Path) -> None:
    d = _stage(tmp_path, "custom")
    pipeline = _custom(["python3", "-c", "import sys; sys.exit(3)"], ["out.txt"])
    script = render_job_script(
        pipeline, job_dir=d.root, subject="S", experiment="E1", inputs=[T1],
        path_prepend=[VENV_BIN],
    )  # fmt: skip
    assert _run(d, script) == 3
    assert jd.read_exit_code(LocalFileSystem(), d) == 3
    assert "x2c: step 1 (python3) failed" in _log(d)
    assert not Path(d.archive("RESULT.zip")).exists()
    run = jd.read_run_info(LocalFileSystem(), d)
    assert run is not None and run.exit_code == 3 and run.ended_at
    assert sorted(p.name for p in Path(d.root).iterdir() if "tmp" in p.name) == []


def test_missing_or_empty_outputs_fail_with_a_reason(tmp_path: Path) -> None:
    d = _stage(tmp_path, "custom")
    make = "open('stats.json', 'w').write('x'); open('empty.txt', 'w'); __import__('os').mkdir('d')"
    pipeline = _custom(
        ["python3", "-c", make], ["stats.json", "mask.nii.gz", "empty.txt", "*.csv", "d"]
    )
    script = render_job_script(
        pipeline, job_dir=d.root, subject="S", experiment="E1", inputs=[T1],
        path_prepend=[VENV_BIN],
    )  # fmt: skip
    assert _run(d, script) == 65
    assert jd.read_exit_code(LocalFileSystem(), d) == 65
    log = _log(d)
    assert "declared output mask.nii.gz is missing from outputs/" in log
    assert "declared output empty.txt is an empty file" in log
    assert "declared output *.csv matched no file in outputs/" in log
    assert "declared output d is an empty directory" in log
    assert "declared outputs are missing or empty (see above); nothing was packed" in log
    assert "stats.json is" not in log
    assert not Path(d.archive("RESULT.zip")).exists()


def test_tar_archive_and_directory_outputs(tmp_path: Path) -> None:
    d = _stage(tmp_path, "custom")
    make = (
        "import os; os.makedirs('sub/mri'); open('sub/mri/lh.v.txt','w').write('1');"
        "open('sub/mri/rh.v.txt','w').write('2'); open('-dash.txt','w').write('3')"
    )
    pipeline = _custom(["python3", "-c", make], ["sub/mri/[lr]h.*.txt", "sub", "*dash*"], "tar.gz")
    script = render_job_script(
        pipeline, job_dir=d.root, subject="S", experiment="E1", inputs=[T1],
        path_prepend=[VENV_BIN],
    )  # fmt: skip
    assert _run(d, script) == 0, _log(d)
    listing = subprocess.run(
        ["tar", "tzf", d.archive("RESULT.tar.gz")], capture_output=True, text=True, check=True
    ).stdout.split()
    # a directory match brings its files; a file matched twice is packed once
    assert listing == ["-dash.txt", "sub/mri/lh.v.txt", "sub/mri/rh.v.txt"]
    assert len(Path(d.manifest).read_text().splitlines()) == 3


def test_find_resume() -> None:
    fs6 = builtin_pipeline("freesurfer6-hippocampal")
    archive = "resources/FREESURFER6/sub-01.zip"
    assert find_resume(fs6, [T1, archive]) == archive
    tree = ["resources/FREESURFER6/sub-01/mri/aseg.mgz", "resources/FREESURFER6/sub-01/x.txt"]
    assert find_resume(fs6, [T1, *tree]) == "resources/FREESURFER6"
    assert find_resume(fs6, [T1]) is None
    assert find_resume(builtin_pipeline("demo"), [T1, archive]) is None


def test_resume_from_a_directory_copies_it(tmp_path: Path) -> None:
    d = _stage(tmp_path, "custom")
    Path(d.input("resources/EARLIER/sub/mri")).mkdir(parents=True)
    Path(d.input("resources/EARLIER/sub/mri/aseg.txt")).write_text("earlier")
    data = _custom(["true"], ["sub/mri/*.txt"]).model_dump()
    data["resume"] = {"resource": "EARLIER", "into": "subjects"}
    data["outputs"] = ["subjects/sub/mri/*.txt"]
    pipeline = parse_pipeline(data)
    resume = find_resume(pipeline, [T1, "resources/EARLIER/sub/mri/aseg.txt"])
    assert resume == "resources/EARLIER"
    script = render_job_script(
        pipeline, job_dir=d.root, subject="S", experiment="E1", inputs=[T1], resume=resume
    )
    assert _run(d, script) == 0, _log(d)
    with zipfile.ZipFile(d.archive("RESULT.zip")) as zf:
        assert zf.namelist() == ["subjects/sub/mri/aseg.txt"]


def test_resume_archive_is_unpacked_before_the_steps(tmp_path: Path) -> None:
    d = _stage(tmp_path, "custom")
    resume = "resources/EARLIER/files/earlier.zip"
    Path(d.input(resume)).parent.mkdir(parents=True)
    with zipfile.ZipFile(d.input(resume), "w") as zf:
        zf.writestr("sub/mri/aseg.txt", "earlier")
        zf.writestr("../escape.txt", "nope")
    data = _custom(["true"], ["sub/mri/*.txt"]).model_dump()
    data["resume"] = {"resource": "EARLIER"}
    data["command"] = [
        {"argv": ["cp", "{resume}", "sub/copy.zip"], "when": "resume"},
        {"argv": ["python3", "-c", "open('sub/mri/new.txt','w').write('n')"]},
    ]
    pipeline = parse_pipeline(data)
    script = render_job_script(
        pipeline, job_dir=d.root, subject="S", experiment="E1", inputs=[T1], resume=resume,
        path_prepend=[VENV_BIN],
    )  # fmt: skip
    assert _run(d, script) == 0, _log(d)
    with zipfile.ZipFile(d.archive("RESULT.zip")) as zf:
        assert sorted(zf.namelist()) == ["sub/mri/aseg.txt", "sub/mri/new.txt"]
    assert Path(d.outputs, "sub/copy.zip").exists()
    assert not (Path(d.root) / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.podman
def test_demo_job_in_podman(tmp_path: Path, podman_image: str) -> None:
    d = _stage(tmp_path)
    canary = tmp_path / "pwned"
    subject = f"sub 01 $(touch {canary}) `touch {canary}` 'q\"\n../x"
    demo = builtin_pipeline("demo")
    assert demo.image == podman_image
    script = render_job_script(
        demo, job_dir=d.root, subject=subject, experiment="E1", inputs=[T1], runtime="podman"
    )
    assert "podman run --rm --runtime runc --network none" in script
    assert _run(d, script) == 0, _log(d)
    _check_demo_result(d, subject)  # byte-identical through podman
    assert not canary.exists()
    # provenance of the real run: the engine's digest and what the script recorded
    digest = image_digest(LocalRunner(), "podman", podman_image)
    assert digest is not None and digest.startswith("sha256:")
    record = build_provenance(
        demo,
        runtime="podman",
        image_digest=digest,
        argv=job_argv(demo, job_dir=d.root, subject=subject, experiment="E1", inputs=[T1],
                      runtime="podman"),
        inputs=[FileRef(T1, Path(d.input(T1)).stat().st_size, None)],
        scheduler="local",
        job_id=None,
        host="local",
        run=jd.read_run_info(LocalFileSystem(), d),
        x2c_version="test",
    )  # fmt: skip
    assert record["container"]["digest"] == digest
    assert record["job"]["exit_code"] == 0 and record["job"]["node"]
    json.dumps(record)


@pytest.mark.cluster
def test_demo_job_under_slurm(tmp_path_factory: pytest.TempPathFactory, cluster: Any) -> None:
    d = _stage(tmp_path_factory.mktemp("slurm"))
    script = render_job_script(
        builtin_pipeline("demo"), job_dir=d.root, subject="S1", experiment="E1", inputs=[T1],
        path_prepend=[VENV_BIN],
    )  # fmt: skip
    Path(d.script).write_text(script)
    done = LocalRunner().run(
        ["sbatch", "--parsable", "--job-name=x2c-test-jobscript", f"--output={d.scheduler_log}",
         f"--chdir={d.root}", "--time=5", d.script],
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    fs = LocalFileSystem()
    _wait_for(d.exit_code, f"the exit marker of SLURM job {job_id}")
    _check_demo_result(d, "S1")
    run = jd.read_run_info(fs, d)
    assert run is not None and run.job_id == job_id


def _wait_for(path: str, what: str, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds  # the shared test cluster may be busy with other jobs
    while not Path(path).exists():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.cluster
def test_scancel_leaves_marker_143(tmp_path_factory: pytest.TempPathFactory, cluster: Any) -> None:
    d = _stage(tmp_path_factory.mktemp("slurm-cancel"), "custom")
    script = render_job_script(
        _custom(["sleep", "300"], ["never"]), job_dir=d.root, subject="S", experiment="E1",
        inputs=[T1],
    )  # fmt: skip
    Path(d.script).write_text(script)
    done = LocalRunner().run(
        ["sbatch", "--parsable", "--job-name=x2c-test-cancel", f"--output={d.scheduler_log}",
         f"--chdir={d.root}", "--time=5", d.script],
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().split(";")[0]
    _wait_for(d.run_info, f"SLURM job {job_id} to start")
    assert LocalRunner().run(["scancel", job_id], timeout=60).returncode == 0
    _wait_for(d.exit_code, f"the exit marker of cancelled SLURM job {job_id}")
    assert jd.read_exit_code(LocalFileSystem(), d) == 143  # TERM went through the EXIT trap


def test_a_missing_staged_input_fails_before_the_steps(tmp_path: Path) -> None:
    d = _stage(tmp_path, "custom")
    Path(d.input(T1)).unlink()
    pipeline = _custom(["touch", "ran"], ["ran"])
    script = render_job_script(
        pipeline, job_dir=d.root, subject="S", experiment="E1", inputs=[T1],
    )  # fmt: skip
    assert _run(d, script) == 66
    assert f"the staged input inputs/{T1} is missing or empty" in _log(d)
    assert not Path(d.outputs, "ran").exists()


# Symbolic links among the declared outputs (issue 9, item 3)

_OUTSIDE_LINKS = {
    # declared output -> how the job makes it (cwd is outputs/), and the name the log must give
    "declared-file": ("import os; os.symlink('/etc/hostname', 'out.txt')", ["out.txt"], "out.txt"),
    "declared-dir": ("import os; os.symlink('/etc', 'tree')", ["tree"], "tree"),
    "nested": (
        "import os; os.mkdir('d'); open('d/a.txt','w').write('a');"
        "os.symlink('/etc/hostname', 'd/host')",
        ["d"],
        "d/host",
    ),
    "to-the-job-dir": ("import os; os.symlink('..', 'up')", ["up"], "up"),
    "dangling": (
        "import os; os.mkdir('d'); open('d/a.txt','w').write('a'); os.symlink('nope', 'd/gone')",
        ["d"],
        "d/gone",
    ),
    # a link inside to an undeclared directory inside, which links outside: caught after
    # following it
    "through-inside-link": (
        "import os; os.mkdir('undeclared'); os.symlink('/etc/hostname', 'undeclared/host');"
        "open('undeclared/a.txt','w').write('a'); os.symlink('undeclared', 'via')",
        ["via"],
        "via/host",
    ),
}


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
@pytest.mark.parametrize("case", sorted(_OUTSIDE_LINKS))
def test_an_output_link_leaving_the_job_dir_fails_naming_it(
    tmp_path: Path, case: str, fmt: str
) -> None:
    make, outputs, named = _OUTSIDE_LINKS[case]
    d = _stage(tmp_path, "custom")
    pipeline = _custom(["python3", "-c", make], outputs, fmt)
    script = render_job_script(
        pipeline, job_dir=d.root, subject="S", experiment="E1", inputs=[T1],
        path_prepend=[VENV_BIN],
    )  # fmt: skip
    assert _run(d, script) == 65, _log(d)
    assert jd.read_exit_code(LocalFileSystem(), d) == 65
    log = _log(d)
    assert f"x2c: output {named} is a symbolic link" in log, log
    assert "leave the job directory or lead nowhere (see above); nothing was packed" in log
    assert not Path(d.archive(f"RESULT.{fmt}")).exists()


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_links_inside_the_job_dir_are_packed_as_files(tmp_path: Path, fmt: str) -> None:
    make = (
        "import os; os.makedirs('sub/surf'); open('sub/surf/lh.pial.T1','w').write('pial');"
        "os.symlink('lh.pial.T1', 'sub/surf/lh.pial'); os.symlink('sub/surf', 'latest')"
    )
    d = _stage(tmp_path, "custom")
    pipeline = _custom(["python3", "-c", make], ["sub", "latest"], fmt)
    script = render_job_script(
        pipeline, job_dir=d.root, subject="S", experiment="E1", inputs=[T1],
        path_prepend=[VENV_BIN],
    )  # fmt: skip
    assert _run(d, script) == 0, _log(d)
    listing = check_archive(LocalHost(), d.archive(f"RESULT.{fmt}"))  # no link member
    files = [m for m in listing.members if not m.endswith("/")]
    assert sorted(files) == [
        "latest/lh.pial",
        "latest/lh.pial.T1",
        "sub/surf/lh.pial",
        "sub/surf/lh.pial.T1",
    ]
