"""x2c: run neuroimaging pipelines for XNAT sessions on a cluster that cannot reach XNAT.

The core library: XNAT access, compute hosts, transfers, schedulers, containers, pipelines and
provenance. No Prefect imports here; ``tasks/`` and ``flows/`` wrap this package.
"""

from x2c.config import HostConfig, SchedulerConfig, XnatConfig
from x2c.errors import (
    ConfigError,
    HostKeyError,
    IntegrityError,
    JobFailedError,
    NothingToProcessError,
    PipelineError,
    RemoteCommandError,
    RemoteError,
    SchedulerError,
    SchedulerOutputError,
    SSHAuthError,
    SSHConnectError,
    SubmissionError,
    TransferError,
    X2CError,
    XnatAuthError,
    XnatConflictError,
    XnatError,
    XnatNotFoundError,
    XnatTransientError,
)
from x2c.hosts import Completed, Host, LocalHost, LocalRunner, Runner, open_host
from x2c.transfers import FileOutcome, HostByteSource, StageReport, describe, fetch, stage

__version__ = "0.1.0"

__all__ = [
    "Completed",
    "ConfigError",
    "FileOutcome",
    "Host",
    "HostByteSource",
    "HostConfig",
    "HostKeyError",
    "IntegrityError",
    "JobFailedError",
    "LocalHost",
    "LocalRunner",
    "NothingToProcessError",
    "PipelineError",
    "RemoteCommandError",
    "RemoteError",
    "Runner",
    "SSHAuthError",
    "SSHConnectError",
    "SchedulerConfig",
    "SchedulerError",
    "SchedulerOutputError",
    "StageReport",
    "SubmissionError",
    "TransferError",
    "X2CError",
    "XnatAuthError",
    "XnatConfig",
    "XnatConflictError",
    "XnatError",
    "XnatNotFoundError",
    "XnatTransientError",
    "__version__",
    "describe",
    "fetch",
    "open_host",
    "stage",
]
