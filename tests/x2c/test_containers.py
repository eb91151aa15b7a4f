"""Container command lines for every runtime, as text; podman's are also run for real in
test_jobscript.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from x2c.containers import Bind, container_argv, image_digest, image_ref
from x2c.errors import PipelineError
from x2c.hosts.base import Completed
from x2c.hosts.local import LocalRunner

ROOT = Path(__file__).resolve().parents[2]

BINDS = [Bind("/w/j/inputs", "/x2c/inputs"), Bind("/w/j/outputs", "/x2c/outputs", False)]
ENV = {"FS_LICENSE": "/lic/license.txt"}
ARGV = ["recon-all", "-s", "a b"]


def test_apptainer_and_singularity() -> None:
    for runtime in ("apptainer", "singularity"):
        argv = container_argv(runtime, "docker://fs:6", ARGV, BINDS, ENV, "/x2c/outputs")
        assert argv == [
            runtime, "exec", "--cleanenv", "--containall",
            "--bind", "/w/j/inputs:/x2c/inputs:ro",
            "--bind", "/w/j/outputs:/x2c/outputs",
            "--env", "FS_LICENSE=/lic/license.txt",
            "--pwd", "/x2c/outputs",
            "docker://fs:6", "recon-all", "-s", "a b",
        ]  # fmt: skip


def test_docker_and_podman() -> None:
    docker = container_argv("docker", "fs:6", ARGV, BINDS, ENV, "/x2c/outputs")
    assert docker == [
        "docker", "run", "--rm", "--network", "none",
        "-v", "/w/j/inputs:/x2c/inputs:ro", "-v", "/w/j/outputs:/x2c/outputs",
        "-w", "/x2c/outputs", "--env", "FS_LICENSE=/lic/license.txt",
        "fs:6", "recon-all", "-s", "a b",
    ]  # fmt: skip
    podman = container_argv("podman", "fs:6", ARGV, BINDS, ENV, "/x2c/outputs")
    assert podman[:6] == ["podman", "run", "--rm", "--runtime", "runc", "--network"]
    assert podman[5:] == docker[3:]
    assert "--runtime" not in container_argv("podman", "fs:6", ARGV, oci_runtime=None)


def test_none_runs_the_argv_itself() -> None:
    assert container_argv("none", "ignored", ARGV, BINDS) == ARGV
    assert container_argv("none", "ignored", ARGV, env=ENV) == [
        "env",
        "FS_LICENSE=/lic/license.txt",
        *ARGV,
    ]


@pytest.mark.parametrize(
    "bind",
    [Bind("/a:b", "/x"), Bind("/a,b", "/x"), Bind("relative", "/x"), Bind("/a", "/x\ny")],
)
def test_binds_that_cannot_be_expressed_are_refused(bind: Bind) -> None:
    with pytest.raises(PipelineError, match="bind path"):
        container_argv("apptainer", "img", ["true"], [bind])


def test_bad_env_names_and_empty_argv_are_refused() -> None:
    with pytest.raises(PipelineError, match="environment variable name"):
        container_argv("docker", "img", ["true"], env={"A B": "x"})
    with pytest.raises(PipelineError, match="argv is empty"):
        container_argv("docker", "img", [])


def test_image_ref() -> None:
    digest = "sha256:" + "a" * 64
    assert image_ref("apptainer", "freesurfer/freesurfer:6.0") == (
        "docker://freesurfer/freesurfer:6.0"
    )
    assert image_ref("singularity", "/images/fs6.sif") == "/images/fs6.sif"
    assert image_ref("podman", "fs:6", digest) == f"fs:6@{digest}"
    assert image_ref("docker", "docker://fs:6") == "fs:6"
    assert image_ref("apptainer", "fs:6", digest) == f"docker://fs:6@{digest}"
    with pytest.raises(PipelineError, match="give a registry name"):
        image_ref("podman", "oras://x/y:1")


class FakeRunner:
    """Answers ``image inspect`` with canned outputs, recording each argv."""

    name = "fake"

    def __init__(self, answers: list[tuple[int, str]]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(
        self, argv: list[str], *, input: bytes | None = None, timeout: float | None = None
    ) -> Completed:
        self.calls.append(argv)
        code, out = self.answers.pop(0)
        return Completed(tuple(argv), code, out, "no such image" if code else "")


def test_image_digest_prefers_the_digest_then_the_id_and_never_invents_one() -> None:
    digest = "sha256:" + "b" * 64
    runner = FakeRunner([(0, digest + "\n")])
    assert image_digest(runner, "podman", "x:1") == digest
    assert runner.calls[0][:4] == ["podman", "image", "inspect", "--format"]
    runner = FakeRunner([(0, "\n"), (0, "c" * 64 + "\n")])
    assert image_digest(runner, "docker", "x:1") == "sha256:" + "c" * 64
    assert image_digest(FakeRunner([(125, "")]), "podman", "x:1") is None
    assert image_digest(FakeRunner([(0, ""), (0, "")]), "podman", "x:1") is None
    assert image_digest(FakeRunner([]), "apptainer", "docker://x:1") is None
    assert image_digest(FakeRunner([]), "none", f"x@{digest}") == digest


@pytest.mark.podman
def test_podman_setup_is_idempotent(podman_image: str) -> None:
    """A second run finds the config and the image current and changes nothing."""
    conf = Path("/etc/containers/containers.conf.d/x2c.conf")
    before = (conf.stat().st_mtime_ns, image_digest(LocalRunner(), "podman", podman_image))
    done = subprocess.run(
        ["bash", str(ROOT / "scripts/podman-setup.sh")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # nothing written, nothing built
    assert (conf.stat().st_mtime_ns, image_digest(LocalRunner(), "podman", podman_image)) == before
    assert 'cgroup_manager = "cgroupfs"' in conf.read_text()
    assert "default_ulimits = []" in conf.read_text()
