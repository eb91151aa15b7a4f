"""Typed, frozen configuration models, validated once at the edge (CLI or flow entry point) and
passed down as objects. Nothing inside x2c reads ``os.environ``: the edge does, and builds these.

Each model belongs to one layer: :class:`XnatConfig` to ``x2c.xnat``, :class:`HostConfig` and
:class:`SchedulerConfig` to ``x2c.hosts`` and ``x2c.schedulers``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class XnatConfig(_Frozen):
    """Where XNAT is and who x2c is there. The password never leaves this object as text except
    into the HTTP client's auth header."""

    url: str = Field(description="Server root, e.g. https://xnat.example.org")
    user: str
    password: SecretStr
    verify: bool | str = Field(
        default=True, description="TLS verification: True, False, or a CA bundle path"
    )
    timeout: float = Field(default=60.0, gt=0, description="Seconds per HTTP request")
    retries: int = Field(default=4, ge=0, description="Retries for 5xx, resets and timeouts")
    backoff_s: float = Field(
        default=1.0, ge=0, description="First retry delay; doubles per retry up to backoff_max_s"
    )
    backoff_max_s: float = Field(default=30.0, ge=0, description="Longest delay between retries")
    max_connections: int = Field(
        default=32,
        ge=1,
        description="HTTP connections kept open to XNAT: at least the threads that share a session",
    )


SchedulerKind = Literal["local", "slurm", "sge", "pbs", "lsf"]
ContainerRuntime = Literal["apptainer", "singularity", "docker", "podman", "none"]


class SchedulerConfig(_Frozen):
    """Which batch scheduler a host uses and the site options every job gets."""

    kind: SchedulerKind = "local"
    partition: str | None = None
    account: str | None = None
    extra_args: tuple[str, ...] = ()
    max_local_jobs: int = Field(default=2, ge=1, description="Slots of the local scheduler")
    arrays: bool = Field(
        default=True,
        description="SLURM: submit a pass's experiments of one pipeline as ONE job array "
        "(false: one sbatch per experiment)",
    )
    array_throttle: int = Field(
        default=0, ge=0, description="SLURM: at most this many tasks of an array at once (0: any)"
    )
    poll_min_s: float = Field(
        default=2.0, gt=0, description="Shortest wait between the passes of `x2c run`"
    )
    poll_max_s: float = Field(
        default=60.0, gt=0, description="Longest wait between the passes of `x2c run`"
    )
    exit_marker_grace_s: float = Field(
        default=30.0, ge=0, description="Wait for the exit marker after a job left the queue"
    )
    unknown_state_limit_s: float = Field(
        default=900.0, gt=0, description="Fail a job stuck in a state x2c does not know"
    )
    log_tail_lines: int = Field(default=40, ge=0, description="Log lines kept with an outcome")
    parallel_env: str = Field(
        default="smp", description="SGE parallel environment for jobs with more than one CPU"
    )
    local_state_dir: str | None = Field(
        default=None, description="Local scheduler's job directory; default <workdir>/.x2c-local"
    )


class HostConfig(_Frozen):
    """A compute host Y: reached over SSH (``ssh`` is a target or ``~/.ssh/config`` alias) or,
    when ``ssh`` is None, the local machine."""

    name: str = "local"
    ssh: str | None = None
    ssh_config: Path | None = Field(
        default=None, description="ssh_config file to resolve the alias; default ~/.ssh/config"
    )
    known_hosts: Path | None = Field(
        default=None,
        description="known_hosts to check host keys; default the ssh_config's "
        "UserKnownHostsFile, else ~/.ssh/known_hosts (checking is never off)",
    )
    workdir: str = Field(description="Absolute work directory on the host")
    scheduler: SchedulerConfig = SchedulerConfig()
    container_runtime: ContainerRuntime = "none"
    path_prepend: tuple[str, ...] = Field(
        default=(),
        description="Directories the job script puts in front of PATH on the node (e.g. a "
        "virtualenv's bin for runtime none, so python3 has the pipeline's modules)",
    )
    max_in_flight: int = Field(default=50, ge=1, description="Experiments in flight on this host")
    max_mem_mb: int | None = Field(
        default=None, ge=1, description="Most memory an escalated job may ask for (MB)"
    )
    max_walltime: str | None = Field(
        default=None,
        pattern=r"^(\d+-)?\d{1,4}:[0-5]\d:[0-5]\d$",
        description="Longest walltime an escalated job may ask for ([D-]HH:MM:SS)",
    )
    max_transfers: int = Field(default=4, ge=1, description="Parallel file transfers")
    max_submit_per_pass: int | None = Field(
        default=None,
        ge=1,
        description="Submissions one pass may make on this host (sites limit sbatch calls per "
        "minute); no cap by default",
    )
    claim_stale_s: float = Field(
        default=600.0,
        gt=0,
        description="A claim on an experiment (a pass staging or submitting it) not renewed for "
        "this long was left by a crash and is taken over",
    )
    connect_timeout: float = Field(default=30.0, gt=0, description="Seconds to open SSH")
    keepalive_interval: float = Field(
        default=30.0, ge=0, description="Seconds between SSH keepalives (0 disables them)"
    )
    keepalive_count_max: int = Field(
        default=3, ge=1, description="Unanswered keepalives before the connection counts as lost"
    )
    max_sessions: int = Field(
        default=10,
        ge=4,
        description="Channels open at once on the one SSH connection (sshd's MaxSessions)",
    )
    reconnect_attempts: int = Field(
        default=5, ge=1, description="Connection attempts before giving up (never a storm)"
    )
    reconnect_backoff_s: float = Field(
        default=2.0, gt=0, description="First delay between attempts; doubles, with jitter"
    )
    reconnect_backoff_max_s: float = Field(
        default=60.0, gt=0, description="Longest delay between connection attempts"
    )
