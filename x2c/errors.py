"""Every error x2c raises, in one tree rooted at :class:`X2CError`.

::

    X2CError
    ├── ConfigError
    ├── XnatError
    │   ├── XnatAuthError
    │   ├── XnatNotFoundError
    │   ├── XnatConflictError
    │   ├── XnatTransientError
    │   └── IntegrityError
    │       └── UnsafeArchiveError
    ├── NothingToProcessError
    ├── RemoteError
    │   ├── SSHConnectError
    │   ├── SSHAuthError
    │   ├── HostKeyError
    │   ├── RemoteCommandError
    │   └── TransferError
    ├── SchedulerError
    │   ├── SubmissionError
    │   └── SchedulerOutputError
    ├── PipelineError
    └── JobFailedError

Third-party exceptions (pyxnat, requests, asyncssh) are translated into this tree in one place per
boundary, always with ``raise ... from exc``. Messages say what failed, with which inputs, and
what to try next; the structured fields are kept on the exception.
"""

from __future__ import annotations

from collections.abc import Sequence


class X2CError(Exception):
    """Root of every error x2c raises on purpose; catch this at the CLI and flow edges."""


class ConfigError(X2CError):
    """Raised when a configuration file or option is missing, malformed or inconsistent."""


class XnatError(X2CError):
    """Raised when the XNAT server refuses or fails a request.

    ``url`` is the request's address without credentials, ``status`` the HTTP status (or None
    when no response came back).
    """

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class XnatAuthError(XnatError):
    """Raised when XNAT rejects the credentials (401) or refuses an action (403)."""


class XnatNotFoundError(XnatError):
    """Raised when a project, subject, experiment, scan, resource or file does not exist, or the
    user cannot read it (XNAT answers 404 for both)."""


class XnatConflictError(XnatError):
    """Raised when XNAT refuses to create something that already exists (409)."""


class XnatTransientError(XnatError):
    """Raised when XNAT is unreachable or answers 5xx after every retry; worth retrying later."""


class IntegrityError(XnatError):
    """Raised when bytes received or uploaded do not match the size or md5 digest XNAT lists.

    ``name`` is the file, ``expected`` and ``actual`` the compared values.
    """

    def __init__(
        self, message: str, *, name: str, expected: str, actual: str, url: str = ""
    ) -> None:
        super().__init__(message, url=url)
        self.name = name
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(IntegrityError):
    """Raised when a result archive on the compute host holds a member that could land outside
    wherever it is unpacked, or is not plain data: a ``..`` or absolute path, a symbolic or hard
    link, a device, FIFO or socket, or the archive cannot be read at all. Never retried: the job
    that wrote it (or whoever changed it since) must be looked at.

    ``member`` is the offending member's name as stored, ``kind`` what is wrong with it.
    """

    def __init__(self, message: str, *, member: str = "", kind: str = "", url: str = "") -> None:
        super().__init__(
            message,
            name=member,
            expected="regular files and directories inside the archive",
            actual=kind,
            url=url,
        )
        self.member = member
        self.kind = kind


class NothingToProcessError(X2CError):
    """Raised when an experiment has no input matching a pipeline's selection.

    This is an expected outcome, not a fault: callers report it as "skipped, because ..." and
    ``reason`` says which selection found nothing.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"nothing to process, because {reason}")
        self.reason = reason


class RemoteError(X2CError):
    """Raised when a compute host (over SSH or local) cannot do what was asked."""

    def __init__(self, message: str, *, host: str = "") -> None:
        super().__init__(message)
        self.host = host


class SSHConnectError(RemoteError):
    """Raised when an SSH connection cannot be opened or was lost; transient, worth a retry."""


class SSHAuthError(RemoteError):
    """Raised when the SSH server rejects x2c's user or keys, or a key cannot be read; never
    retried, since repeated failed logins can lock the account."""


class HostKeyError(RemoteError):
    """Raised when a host's key is unknown or has changed; never retried, a person must check."""


class RemoteCommandError(RemoteError):
    """Raised when a command on a host exits non-zero where success was required.

    ``argv``, ``returncode`` and ``stderr`` are kept for the caller and the logs.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str = "",
        argv: Sequence[str] = (),
        returncode: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(message, host=host)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


class TransferError(RemoteError):
    """Raised when a file cannot be written to or read from a host during a transfer."""


class SchedulerError(X2CError):
    """Raised when a batch scheduler cannot be used as asked."""


class SubmissionError(SchedulerError):
    """Raised when the scheduler refuses a job; ``stderr`` carries the scheduler's own words."""

    def __init__(self, message: str, *, stderr: str = "", argv: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.argv = list(argv)


class SchedulerOutputError(SchedulerError):
    """Raised when a scheduler command's output cannot be parsed; ``output`` holds it."""

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class PipelineError(X2CError):
    """Raised when a pipeline description is invalid or cannot be rendered into a job."""


class JobFailedError(X2CError):
    """Raised when a job ended in any state but success; never retried automatically.

    ``job_id``, ``state``, ``exit_code``, ``reason`` and ``log_tail`` describe the end.
    """

    def __init__(
        self,
        message: str,
        *,
        job_id: str = "",
        state: str = "",
        exit_code: int | None = None,
        reason: str = "",
        log_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.state = state
        self.exit_code = exit_code
        self.reason = reason
        self.log_tail = log_tail
