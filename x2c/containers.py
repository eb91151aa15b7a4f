"""Container command lines: how a pipeline's argv runs in apptainer, singularity, docker, podman
or bare (runtime ``none``), with explicit binds and environment.

:func:`container_argv` is pure: it returns an argv list, which the job script quotes element by
element. :func:`image_digest` asks a host's container engine for an image's digest, for
provenance.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from x2c.config import ContainerRuntime
from x2c.errors import PipelineError
from x2c.hosts.base import Runner

log = logging.getLogger(__name__)

_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# apptainer's --bind and docker's -v split on ':' (and apptainer also on ','), so such paths
# cannot be expressed; refuse them instead of producing a bind to the wrong place.
_BIND_FORBIDDEN = re.compile(r"[:,\n\r\x00]")


@dataclass(frozen=True)
class Bind:
    """A host directory or file made visible in the container at ``dst``."""

    src: str
    dst: str
    read_only: bool = True

    def spec(self) -> str:
        """The ``src:dst[:ro]`` form shared by apptainer ``--bind`` and docker/podman ``-v``."""
        for path in (self.src, self.dst):
            if not path.startswith("/") or _BIND_FORBIDDEN.search(path):
                raise PipelineError(
                    f"bind path {path!r} must be absolute and free of ':' ',' and newlines; "
                    "move the data or link it from a plain path"
                )
        return f"{self.src}:{self.dst}:ro" if self.read_only else f"{self.src}:{self.dst}"


def _check_env(env: Mapping[str, str]) -> None:
    for key in env:
        if not _ENV_KEY.fullmatch(key):
            raise PipelineError(f"environment variable name {key!r} is not valid")


def image_ref(runtime: ContainerRuntime, image: str, digest: str | None = None) -> str:
    """The image reference a runtime understands, pinned to ``digest`` when one is given.

    apptainer and singularity get ``docker://`` added to plain registry names; a ``.sif`` file,
    an absolute path or a reference with a scheme is used as it is.
    """
    ref = f"{image.split('@', 1)[0]}@{digest}" if digest else image
    if runtime in ("apptainer", "singularity"):
        if "://" in ref or ref.startswith("/") or ref.endswith(".sif"):
            return ref
        return f"docker://{ref}"
    if runtime in ("docker", "podman") and "://" in ref:
        scheme, rest = ref.split("://", 1)
        if scheme != "docker":
            raise PipelineError(f"{runtime} cannot run image {image!r}; give a registry name")
        return rest
    return ref


def container_argv(
    runtime: ContainerRuntime,
    image: str,
    argv: Sequence[str],
    binds: Sequence[Bind] = (),
    env: Mapping[str, str] | None = None,
    workdir: str | None = None,
    *,
    oci_runtime: str | None = "runc",
) -> list[str]:
    """The argv that runs ``argv`` inside ``image`` with ``runtime``.

    - apptainer/singularity: ``exec --cleanenv --containall --bind src:dst[:ro] --env K=V
      --pwd workdir image argv...``; ``--containall`` keeps the host's home and /tmp out, so
      only the explicit binds are visible.
    - docker/podman: ``run --rm --network none -v src:dst[:ro] -w workdir --env K=V image
      argv...``; podman also gets ``--runtime <oci_runtime>`` (runc here; None leaves it to
      containers.conf).
    - none: ``argv`` itself, prefixed by ``env K=V`` when there is environment; the job script
      has already changed into the working directory, and binds do not apply.
    """
    if not argv:
        raise PipelineError("a pipeline step needs a command; its argv is empty")
    env = dict(env or {})
    _check_env(env)
    specs = [b.spec() for b in binds]
    if runtime == "none":
        if not env:
            return list(argv)
        return ["env", *(f"{k}={v}" for k, v in env.items()), *argv]
    if runtime in ("apptainer", "singularity"):
        out = [runtime, "exec", "--cleanenv", "--containall"]
        for spec in specs:
            out += ["--bind", spec]
        for key, value in env.items():
            out += ["--env", f"{key}={value}"]
        if workdir:
            out += ["--pwd", workdir]
        return [*out, image, *argv]
    if runtime in ("docker", "podman"):
        out = [runtime, "run", "--rm"]
        if runtime == "podman" and oci_runtime:
            out += ["--runtime", oci_runtime]
        out += ["--network", "none"]
        for spec in specs:
            out += ["-v", spec]
        if workdir:
            out += ["-w", workdir]
        for key, value in env.items():
            out += ["--env", f"{key}={value}"]
        return [*out, image, *argv]
    raise PipelineError(f"unknown container runtime {runtime!r}")


def image_digest(runner: Runner, runtime: ContainerRuntime, image: str) -> str | None:
    """The digest of ``image`` as the host's engine reports it, or None when unknown.

    docker and podman report the manifest digest, else the image id (both ``sha256:...``);
    apptainer, singularity and ``none`` have no such notion here, so None (never a made-up
    value). A reference pinned with ``@sha256:...`` is its own digest.
    """
    if "@sha256:" in image:
        return image.split("@", 1)[1]
    if runtime not in ("docker", "podman"):
        return None
    for field in ("{{.Digest}}", "{{.Id}}"):
        done = runner.run([runtime, "image", "inspect", "--format", field, image], timeout=60)
        value = done.stdout.strip()
        if done.returncode != 0:
            log.warning("%s image inspect %s failed: %s", runtime, image, done.stderr.strip())
            return None
        if re.fullmatch(r"(sha256:)?[0-9a-f]{64}", value):
            return value if value.startswith("sha256:") else f"sha256:{value}"
    return None
