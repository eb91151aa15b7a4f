"""Reading what is on XNAT: experiments, scans and resource files, as frozen x2c records.

Each function costs a fixed, documented number of requests, whatever the project's size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from x2c.errors import XnatError, XnatNotFoundError
from x2c.xnat.session import XnatSession, path_of

logger = logging.getLogger(__name__)

_EXPERIMENT_COLUMNS = "ID,label,project,subject_label,date,insert_date,last_modified"


@dataclass(frozen=True)
class Experiment:
    """An imaging session: its accession ``id`` (``XNAT_E00001``), ``label`` in ``project``, the
    ``subject`` label, and the dates XNAT keeps as text ("" when unset)."""

    id: str
    label: str
    project: str
    subject: str
    date: str
    insert_date: str
    last_modified: str


@dataclass(frozen=True)
class Scan:
    """One scan of an experiment: ``id`` (``"1"``, ``"2a"``), ``type``, ``quality``, and
    ``series_description``."""

    id: str
    type: str
    quality: str
    series_description: str


@dataclass(frozen=True)
class XnatFile:
    """One file in a resource as XNAT lists it: ``path`` inside the resource (may hold ``/``),
    ``size`` in bytes, md5 ``digest`` (None when XNAT has none), and the server-relative ``uri``
    (quoted) to download it."""

    path: str
    size: int
    digest: str | None
    uri: str
    content: str = ""
    """The file's ``content`` attribute (set by whoever uploaded it; x2c marks its provenance
    with it)."""


def _experiment(row: dict[str, str], project: str = "") -> Experiment:
    return Experiment(
        id=row.get("ID", ""),
        label=row.get("label", ""),
        project=row.get("project", "") or project,
        subject=row.get("subject_label", ""),
        date=row.get("date", ""),
        insert_date=row.get("insert_date", ""),
        last_modified=row.get("last_modified", ""),
    )


def list_experiments(session: XnatSession, project: str) -> list[Experiment]:
    """Every experiment OWNED by ``project`` with its subject and dates, in ONE request (all
    rows: ``limit=*``, XNAT's advice to scripts). An experiment shared into ``project`` from
    another one is listed by XNAT with its owning project; it is left out here (and logged),
    so it is processed once, under its owner. Raises :class:`XnatNotFoundError` when the
    project does not exist or the user cannot read it."""
    rows = session.result_set(
        path_of("data", "projects", project, "experiments"),
        what=f"list experiments of project {project!r}",
        params={"columns": _EXPERIMENT_COLUMNS, "limit": "*"},
    )
    found = [_experiment(row, project) for row in rows]
    shared = [e for e in found if e.project != project]
    if shared:
        logger.info(
            "project %s: %d experiment(s) shared into it from other projects (%s) are processed "
            "under their owning project",
            project,
            len(shared),
            ", ".join(f"{e.label} of {e.project}" for e in shared[:5]),
        )
    return sorted((e for e in found if e.project == project), key=lambda e: e.id)


def get_experiment(session: XnatSession, experiment_id: str) -> Experiment:
    """The experiment with accession ID ``experiment_id``, in ONE request; raises
    :class:`XnatNotFoundError` when there is none (or it is not readable)."""
    what = f"look up experiment {experiment_id!r}"
    rows = session.result_set(
        path_of("data", "experiments"),
        what=what,
        params={"ID": experiment_id, "columns": _EXPERIMENT_COLUMNS},
    )
    return _one(rows, what, lambda row: row.get("ID") == experiment_id)


def find_experiment(session: XnatSession, project: str, label: str) -> Experiment:
    """The experiment labelled ``label`` in ``project``, in ONE request; raises
    :class:`XnatNotFoundError` when there is none."""
    what = f"look up experiment {label!r} in project {project!r}"
    rows = session.result_set(
        path_of("data", "projects", project, "experiments"),
        what=what,
        params={"label": label, "columns": _EXPERIMENT_COLUMNS},
    )
    return _one(rows, what, lambda row: row.get("label") == label, project)


def _one(
    rows: list[dict[str, str]],
    what: str,
    match: Callable[[dict[str, str]], bool],
    project: str = "",
) -> Experiment:
    # Filter again locally: a server that ignores the query filter must not hand back a
    # neighbour's experiment.
    hits = [row for row in rows if match(row)]
    if not hits:
        raise XnatNotFoundError(f"{what}: no such experiment, or this user cannot read it")
    if len(hits) > 1:
        ids = ", ".join(sorted(row.get("ID", "?") for row in hits))
        raise XnatError(f"{what}: several experiments match ({ids}); use the accession ID")
    return _experiment(hits[0], project)


def list_scans(session: XnatSession, experiment_id: str) -> list[Scan]:
    """The scans of an experiment ordered by ID, in ONE request."""
    rows = session.result_set(
        path_of("data", "experiments", experiment_id, "scans"),
        what=f"list scans of experiment {experiment_id!r}",
        params={"columns": "ID,type,quality,series_description"},
    )
    scans = [
        Scan(
            id=row.get("ID", ""),
            type=row.get("type", ""),
            quality=row.get("quality", ""),
            series_description=row.get("series_description", ""),
        )
        for row in rows
    ]
    return sorted(scans, key=lambda s: _scan_order(s.id))


@dataclass(frozen=True)
class Contents:
    """What an experiment's document tells in one request: its ``scans`` ordered by ID, and the
    ``resources`` labels of the experiment's own resources."""

    experiment_id: str
    scans: tuple[Scan, ...]
    resources: frozenset[str]


def experiment_contents(session: XnatSession, experiment_id: str) -> Contents:
    """The scans and resource labels of an experiment, in ONE request: its document
    (``?format=json``), whose ``children`` hold ``scans/scan`` and ``resources/resource`` items
    as xnatpy reads them (history items left out). Raises :class:`XnatNotFoundError` when the
    experiment does not exist (or cannot be read), :class:`XnatError` for a document of
    another shape."""
    what = f"read the document of experiment {experiment_id!r}"
    doc = session.get_json(path_of("data", "experiments", experiment_id), what=what)
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict):
        raise XnatError(f"{what}: XNAT answered a document without one item; is this XNAT?")

    def fields(name: str) -> list[dict[str, object]]:
        out = []
        for child in items[0].get("children") or []:
            if isinstance(child, dict) and child.get("field") == name:
                for item in child.get("items") or []:
                    if isinstance(item, dict) and not (item.get("meta") or {}).get("isHistory"):
                        out.append(item.get("data_fields") or {})
        return out

    scans = [
        Scan(
            id=str(f.get("ID", "")),
            type=str(f.get("type", "")),
            quality=str(f.get("quality", "")),
            series_description=str(f.get("series_description", "")),
        )
        for f in fields("scans/scan")
    ]
    return Contents(
        experiment_id=experiment_id,
        scans=tuple(sorted(scans, key=lambda s: _scan_order(s.id))),
        resources=frozenset(str(f.get("label", "")) for f in fields("resources/resource")),
    )


def _scan_order(scan_id: str) -> tuple[int, str]:
    digits = "".join(c for c in scan_id if c.isdigit())
    return (int(digits) if digits else 1 << 30, scan_id)


def list_resource_files(
    session: XnatSession, experiment_id: str, resource: str, *, scan_id: str | None = None
) -> list[XnatFile]:
    """The files of an experiment-level resource, or of scan ``scan_id``'s resource, in ONE
    request; raises :class:`XnatNotFoundError` when the resource does not exist."""
    segments = ["data", "experiments", experiment_id]
    if scan_id is not None:
        segments += ["scans", scan_id]
    segments += ["resources", resource, "files"]
    where = f"scan {scan_id!r} of " if scan_id is not None else ""
    rows = session.result_set(
        path_of(*segments),
        what=f"list files of resource {resource!r} of {where}experiment {experiment_id!r}",
    )
    return sorted((_file(row, segments) for row in rows), key=lambda f: f.path)


def _file(row: dict[str, str], segments: list[str]) -> XnatFile:
    uri = row.get("URI", "")
    marker = "/files/"
    name = row.get("Name", "")
    relative = unquote(uri[uri.index(marker) + len(marker) :]) if marker in uri else name
    if not relative:
        raise XnatError(f"XNAT listed a file without Name or URI under {'/'.join(segments)}")
    try:
        size = int(row.get("Size", "") or "-1")
    except ValueError:
        size = -1
    digest = (row.get("digest") or "").strip().lower() or None
    return XnatFile(
        path=relative,
        size=size,
        digest=digest,
        uri=path_of(*segments, *relative.split("/")),
        content=row.get("file_content", ""),
    )
