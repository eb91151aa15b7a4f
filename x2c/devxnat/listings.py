"""XNAT's listing responses: rows of strings, filtered, cut to ``columns=`` and rendered as the
``ResultSet`` JSON envelope or as CSV.

XNAT facts kept here (recorded responses in tests/data/xnat/recorded/): the JSON envelope of a
listing is ``{"ResultSet": {"Result": [...], "totalRecords": "N"}}`` with no ``title``; every
value is a string; ``totalRecords`` is a string too; ``columns=``
accepts shortcut names (``label``) and xpaths (``xnat:subjectAssessorData/subject_id``) and the
answer is keyed by the shortcut (``subject_ID``); resource and file listings ignore ``columns=``
(xnatpy relies on resources having neither ``ID`` nor ``URI``); query parameters named after a
column filter the rows, with ``*`` wildcards and comma-separated alternatives.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from x2c.devxnat import datatypes

# Query parameters that are never filters.
RESERVED = frozenset(
    {
        "format",
        "columns",
        "sortby",
        "sortorder",
        "limit",
        "offset",
        "accessible",
        "owner",
        "member",
        "collaborator",
        "restrictions",
        "recent",
        "prearc_code",
        "quarantine_code",
        "req_format",
        "timestamp",
        "file_format",
        "locator",
        "all",
        "index",
        "sort",
    }
)


@dataclass(frozen=True)
class Level:
    """One listing level: its title, default columns and every column it can give."""

    title: str
    defaults: tuple[str, ...]
    extra: tuple[str, ...] = ()
    honours_columns: bool = True
    # What the JSON envelope holds beside ``Result``: listings give ``totalRecords`` only; the
    # search-element table (XNAT's Search API page) gives ``title`` only.
    json_total: bool = True
    json_title: bool = False
    # Whether ``limit``/``offset`` page the rows (XNAT 1.8.9+ pages its subject and experiment
    # tables: wiki.xnat.org/xnat-api/paging-restful-tables).
    pages: bool = False

    @property
    def known(self) -> tuple[str, ...]:
        """Every column name this level knows, defaults first."""
        return self.defaults + tuple(c for c in self.extra if c not in self.defaults)


PROJECTS = Level(
    "Projects",
    ("ID", "secondary_ID", "name", "description", "pi_firstname", "pi_lastname", "URI"),
    ("insert_date", "xsiType", "alias"),
)
SUBJECTS = Level(
    "Subjects",
    ("ID", "project", "label", "insert_date", "insert_user", "URI"),
    ("xsiType", "last_modified", "subject_label"),
    pages=True,
)
EXPERIMENTS = Level(
    "Experiments",
    # XNAT's default experiment listing really does carry this xpath-named copy of the ID.
    (
        "xnat:subjectassessordata/id",
        "ID",
        "project",
        "date",
        "xsiType",
        "label",
        "insert_date",
        "URI",
    ),
    (
        "last_modified",
        "subject_ID",
        "subject_label",
        "subject_project",
        "session_ID",
        "session_label",
        "modality",
        "note",
        "insert_user",
    ),
    pages=True,
)
SCANS = Level(
    "Scans",
    (
        "xnat_imagescandata_id",
        "ID",
        "type",
        "quality",
        "xsiType",
        "note",
        "series_description",
        "URI",
    ),
    ("image_session_ID", "frames", "UID"),
)
RESOURCES = Level(
    "Resources",
    (
        "xnat_abstractresource_id",
        "label",
        "element_name",
        "category",
        "cat_id",
        "cat_desc",
        "format",
        "content",
        "tags",
        "file_count",
        "file_size",
    ),
    honours_columns=False,
    # XNAT's Image Scan Resource API page shows this envelope with "title": "Resources" (a
    # documented, not a recorded, body).
    json_title=True,
)
FILES = Level(
    "Files",
    (
        "Name",
        "Size",
        "URI",
        "collection",
        "file_tags",
        "file_format",
        "file_content",
        "cat_ID",
        "digest",
    ),
    honours_columns=False,
)
ELEMENTS = Level(
    "Data-Types",
    ("ELEMENT_NAME", "SINGULAR", "PLURAL", "CATEGORY", "SECURED", "BROWSEABLE", "COUNT"),
    json_total=False,
    json_title=True,
)
# Search results (POST /data/search): their columns come from the search document.
SEARCH = Level("Search results", (), honours_columns=False)
FIELDS = Level(
    "Fields",
    ("FIELD_ID", "HEADER", "SUMMARY", "TYPE", "REQUIRES_VALUE", "DESC", "ELEMENT_NAME", "SRC"),
)

# xpath field names whose shortcut differs from the last path element (lower-cased).
_XPATH_ALIASES = {
    "id": "ID",
    "subject_id": "subject_ID",
    "session_id": "session_ID",
    "image_session_id": "image_session_ID",
    "secondary_id": "secondary_ID",
    "pi/firstname": "pi_firstname",
    "pi/lastname": "pi_lastname",
    "meta/insert_date": "insert_date",
    "meta/last_modified": "last_modified",
    "meta/insert_user/login": "insert_user",
    "subject_id/label": "subject_label",
}


# The default experiment listing's xpath copy of the ID (recorded); with ``xsiType=T`` it is
# named after T instead (``xnat:mrsessiondata/id``, quoted by an XNAT sync plugin).
ROOT_ID = "xnat:subjectassessordata/id"
# Row fields read from a session's scan when an experiment listing asks for scan columns.
SCAN_PREFIX = "scan/"


def _is_xpath(column: str) -> bool:
    head, _, field = column.strip().partition("/")
    return ":" in head and bool(field)


def shortcut(level: Level, column: str) -> str | None:
    """The row field a requested column or filter reads, or None if unknown.

    ``label`` and ``LABEL`` give ``label``; ``xnat:subjectAssessorData/subject_id`` gives
    ``subject_ID``; ``xnat:mrSessionData/meta/last_modified`` gives ``last_modified``; on an
    experiment listing ``xnat:subjectData/label`` gives ``subject_label`` and a scan xpath
    (``xnat:mrScanData/type``) gives ``scan/type``, read from each scan of the session.
    """
    by_lower = {c.lower(): c for c in level.known}
    text = column.strip()
    if _is_xpath(text):
        head, _, field = text.partition("/")
        field = field.lower()
        if level is EXPERIMENTS and datatypes.is_scan_type(head):
            name = shortcut(SCANS, field)
            return SCAN_PREFIX + name if name is not None else None
        if level is EXPERIMENTS and head.lower() == "xnat:subjectdata":
            field = {"label": "subject_label", "id": "subject_id"}.get(field, field)
        alias = _XPATH_ALIASES.get(field)
        if alias is not None and alias.lower() in by_lower:
            return by_lower[alias.lower()]
        return by_lower.get(field)
    if text.lower() == "xsi_type":
        return by_lower.get("xsitype")
    return by_lower.get(text.lower())


def scan_type_wanted(level: Level, params: Mapping[str, str]) -> str | None:
    """The scan type (``xnat:mrScanData``) whose columns or filters an experiment listing asks
    for, or None: XNAT then answers one row per matching scan of each session."""
    if level is not EXPERIMENTS:
        return None
    names = [c for c in params.get("columns", "").split(",") if c.strip()] + list(params)
    for name in names:
        head = name.strip().partition("/")[0]
        if _is_xpath(name) and datatypes.is_scan_type(head):
            return head
    return None


def _matches(value: str, pattern: str) -> bool:
    return any(
        fnmatch.fnmatchcase(value.lower(), alt.strip().lower())
        for alt in pattern.split(",")
        if alt.strip()
    )


def _is_of_type(value: str, wanted: str) -> bool:
    return any(datatypes.is_a(value, alt) for alt in wanted.split(",") if alt.strip())


def filter_rows(
    level: Level, rows: Iterable[Mapping[str, str]], params: Mapping[str, str]
) -> list[Mapping[str, str]]:
    """Keep the rows matching every query parameter that names a column of ``level``.

    ``xsiType`` follows the data-type hierarchy: ``xnat:imageSessionData`` keeps MR, PET and CT
    sessions; other columns match ``*`` wildcards and comma-separated alternatives.
    """
    tests: list[tuple[str, str]] = []
    for key, value in params.items():
        if key.lower() in RESERVED or key.startswith("xsi:"):
            continue
        name = shortcut(level, key)
        if name is not None:
            tests.append((name, value))

    def keep(row: Mapping[str, str]) -> bool:
        for name, value in tests:
            test = _is_of_type if name == "xsiType" else _matches
            if not test(row.get(name, ""), value):
                return False
        return True

    return [row for row in rows if keep(row)]


class BadPaging(ValueError):
    """``limit`` or ``offset`` is neither a whole number nor (for ``limit``) ``*``."""


def page(
    level: Level, rows: list[Mapping[str, str]], params: Mapping[str, str]
) -> list[Mapping[str, str]]:
    """The rows ``limit``/``offset`` select, as XNAT 1.8.9+ pages subject and experiment tables:
    ``limit`` rows after skipping ``offset``; ``limit=*`` or no ``limit`` gives every row. Other
    listings ignore both. Raises :class:`BadPaging` for values that are not whole numbers."""
    if not level.pages:
        return rows
    limit_text = params.get("limit", "*").strip() or "*"
    offset_text = params.get("offset", "0").strip() or "0"
    if not offset_text.isdigit() or not (limit_text == "*" or limit_text.isdigit()):
        raise BadPaging(
            f"limit={limit_text!r}, offset={offset_text!r}: use whole numbers (limit=* for all)"
        )
    start = int(offset_text)
    return rows[start:] if limit_text == "*" else rows[start : start + int(limit_text)]


def choose_columns(
    level: Level, requested: str | None, root: str | None = None
) -> list[tuple[str, str]]:
    """The answer's columns as (key, row field) pairs: the defaults, or the known ones among
    ``requested`` in order.

    A column is answered under its shortcut name when it has one, even when asked by xpath
    (pyxnat asks ``xnat:subjectAssessorData/subject_id`` and reads ``subject_ID``); a scan
    column of an experiment listing, which has none, under its lower-cased xpath
    (``xnat:mrscandata/id``, as pyxnat's live-server test reads it). ``URI`` stays wherever the
    level has it, and an experiment listing always carries its xpath copy of the ID, named after
    ``root`` (the ``xsiType`` asked for) when given.
    """
    root_key = f"{root.strip().lower()}/id" if root else ROOT_ID

    def defaults() -> list[tuple[str, str]]:
        return [(root_key, "ID") if c == ROOT_ID else (c, c) for c in level.defaults]

    if not level.honours_columns or not requested or requested.strip().upper() == "DEFAULT":
        return defaults()
    chosen: dict[str, str] = {}
    for col in requested.split(","):
        if col.strip().upper() == "DEFAULT":
            pairs = defaults()
        else:
            name = shortcut(level, col)
            if name is None:
                pairs = []
            elif name.startswith(SCAN_PREFIX):
                pairs = [(col.strip().lower(), name)]
            else:
                pairs = [(name, name)]
        for key, name in pairs:
            chosen.setdefault(key, name)
    if level is EXPERIMENTS:
        chosen.setdefault(root_key, "ID")
    if level is PROJECTS:  # pyxnat asks columns=alias and reads each row's ID
        chosen.setdefault("ID", "ID")
    if "URI" in level.defaults:
        chosen.setdefault("URI", "URI")
    return list(chosen.items())


def render(
    level: Level,
    rows: Sequence[Mapping[str, str]],
    columns: Sequence[tuple[str, str]],
    fmt: str,
) -> tuple[str, str]:
    """The body and media type of a listing in ``fmt`` (``json``, the default, or ``csv``);
    ``columns`` are (key, row field) pairs from :func:`choose_columns`."""
    table = [{key: str(row.get(name, "")) for key, name in columns} for row in rows]
    keys = [key for key, _ in columns]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(keys)
        for row in table:
            writer.writerow([row[k] for k in keys])
        return buf.getvalue(), "text/csv; charset=utf-8"
    result_set: dict[str, object] = {"Result": table}
    if level.json_total:
        result_set["totalRecords"] = str(len(table))
    if level.json_title:
        result_set["title"] = level.title
    return json.dumps({"ResultSet": result_set}), "application/json; charset=utf-8"
