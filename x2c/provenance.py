"""The provenance record uploaded beside each result: what ran, on what, from which inputs.

:func:`build_provenance` returns a JSON-serialisable dict. Unknown facts are ``None``, never
guessed. Nothing secret goes in: URLs lose their user info, query and fragment, and environment
values whose names look like secrets are replaced by ``"<redacted>"``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from x2c.config import ContainerRuntime
from x2c.jobdir import RunInfo
from x2c.pipelines import Pipeline
from x2c.sources import FileRef

SCHEMA = "x2c.provenance/1"
REDACTED = "<redacted>"
_SECRET_NAME = re.compile(
    r"PASS|SECRET|TOKEN|CREDENTIAL|AUTH|API_?KEY|PRIVATE|COOKIE|SESSION", re.I
)
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]*@")


def public_url(url: str) -> str:
    """``url`` without user, password, query or fragment: safe to record and to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the values of secret-looking names (PASSWORD, TOKEN, ...) redacted."""
    return {k: (REDACTED if _SECRET_NAME.search(k) else v) for k, v in sorted(env.items())}


def _scrub(value: str) -> str:
    return _USERINFO.sub(r"\1", value)


def build_provenance(
    pipeline: Pipeline,
    *,
    runtime: ContainerRuntime,
    image_digest: str | None,
    argv: Sequence[Sequence[str]],
    inputs: Sequence[FileRef],
    scheduler: str,
    job_id: str | None,
    host: str,
    run: RunInfo | None = None,
    exit_code: int | None = None,
    x2c_version: str,
    source_url: str | None = None,
    project: str = "",
    subject: str = "",
    experiment: str = "",
    env: Mapping[str, str] | None = None,
    created_at: datetime | None = None,
    archive: FileRef | None = None,
    attempts: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The provenance record of one finished job.

    ``argv`` is the pipeline's command steps as run (:func:`x2c.jobscript.job_argv`);
    ``inputs`` the staged files with their XNAT md5 digests; ``run`` what the job script wrote
    in ``run.env`` (node, start and end times, exit code), which wins over ``exit_code`` and
    ``job_id`` when it has them. ``source_url`` is the XNAT server, recorded without
    credentials. ``env`` defaults to the pipeline's own (non-secret) environment.
    ``archive`` is the result archive as collected (:func:`x2c.archive_check.check_archive`:
    size and md5 measured on the host, members checked); its digest is recorded with
    ``"measured": true``. Without it the job's own figures from ``run.env`` are recorded.
    ``attempts`` lists every attempt of the job, the earlier ones escalated after running out
    of memory or time (:mod:`x2c.escalation`), each with its resources and how it ended.
    """
    run = run or RunInfo()
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "created_at": (created_at or datetime.now(UTC)).isoformat(timespec="seconds"),
        "x2c_version": x2c_version,
        "pipeline": {
            "name": pipeline.name,
            "version": pipeline.version,
            "resource": pipeline.resource,
            "archive": pipeline.archive_name,
        },
        "container": {
            "runtime": runtime,
            "image": _scrub(pipeline.image),
            "digest": image_digest or pipeline.digest,
        },
        "command": [[_scrub(a) for a in step] for step in argv],
        "env": redact_env(pipeline.environment if env is None else env),
        "source": {
            "xnat": public_url(source_url) if source_url else None,
            "project": project,
            "subject": subject,
            "experiment": experiment,
        },
        "inputs": [{"path": ref.path, "size": ref.size, "md5": ref.md5} for ref in inputs],
        "job": {
            "scheduler": scheduler,
            "job_id": run.job_id or job_id,
            "host": host,
            "node": run.node,
            "exit_code": run.exit_code if run.exit_code is not None else exit_code,
            "started_at": run.started_at,
            "ended_at": run.ended_at,
            "attempts": [dict(a) for a in attempts],
        },
        "archive": (
            {"md5": archive.md5, "size": archive.size, "measured": True}
            if archive is not None
            else {"md5": run.archive_md5, "size": run.archive_size, "measured": False}
        ),
    }
    return record
