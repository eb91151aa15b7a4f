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

    @property
    def known(self) -> tuple[str, ...]:
        """Every column name this level knows, defaults first."""
        return self.defaults + tuple(c for c in self.extra if c not in self.defaults)


PROJECTS = Level(
    "Projects",
    ("ID", "secondary_ID", "name", "description", "pi_firstname", "pi_lastname", "URI"),
    ("insert_date", "xsiType"),
)
SUBJECTS = Level(
    "Subjects",
    ("ID", "project", "label", "insert_date", "insert_user", "URI"),
    ("xsiType", "last_modified", "subject_label"),
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


def shortcut(level: Level, column: str) -> str | None:
    """The shortcut name XNAT answers with for a requested column, or None if unknown.

    ``label`` and ``LABEL`` give ``label``; ``xnat:subjectAssessorData/subject_id`` gives
    ``subject_ID``; ``xnat:mrSessionData/meta/last_modified`` gives ``last_modified``.
    """
    by_lower = {c.lower(): c for c in level.known}
    text = column.strip()
    if ":" in text.split("/", 1)[0] and "/" in text:
        field = text.split("/", 1)[1].lower()
        alias = _XPATH_ALIASES.get(field)
        if alias is not None and alias.lower() in by_lower:
            return by_lower[alias.lower()]
        return by_lower.get(field)
    if text.lower() == "xsi_type":
        return by_lower.get("xsitype")
    return by_lower.get(text.lower())


def _matches(value: str, pattern: str) -> bool:
    return any(
        fnmatch.fnmatchcase(value.lower(), alt.strip().lower())
        for alt in pattern.split(",")
        if alt.strip()
    )


def filter_rows(
    level: Level, rows: Iterable[Mapping[str, str]], params: Mapping[str, str]
) -> list[Mapping[str, str]]:
    """Keep the rows matching every query parameter that names a column of ``level``."""
    tests: list[tuple[str, str]] = []
    for key, value in params.items():
        if key.lower() in RESERVED or key.startswith("xsi:"):
            continue
        name = shortcut(level, key)
        if name is not None:
            tests.append((name, value))
    return [row for row in rows if all(_matches(row.get(k, ""), v) for k, v in tests)]


def choose_columns(level: Level, requested: str | None) -> list[str]:
    """The columns of the answer: the defaults, or the known ones among ``requested`` in order.

    ``URI`` stays in a shortened answer wherever the level has it, as XNAT keeps it.
    """
    if not level.honours_columns or not requested or requested.strip().upper() == "DEFAULT":
        return list(level.defaults)
    chosen: list[str] = []
    for col in requested.split(","):
        if col.strip().upper() == "DEFAULT":
            names = list(level.defaults)
        else:
            name = shortcut(level, col)
            names = [name] if name is not None else []
        for name in names:
            if name not in chosen:
                chosen.append(name)
    if "URI" in level.defaults and "URI" not in chosen:
        chosen.append("URI")
    return chosen


def render(
    level: Level, rows: Sequence[Mapping[str, str]], columns: Sequence[str], fmt: str
) -> tuple[str, str]:
    """The body and media type of a listing in ``fmt`` (``json``, the default, or ``csv``)."""
    table = [{c: str(row.get(c, "")) for c in columns} for row in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in table:
            writer.writerow([row[c] for c in columns])
        return buf.getvalue(), "text/csv; charset=utf-8"
    result_set: dict[str, object] = {"Result": table}
    if level.json_total:
        result_set["totalRecords"] = str(len(table))
    if level.json_title:
        result_set["title"] = level.title
    return json.dumps({"ResultSet": result_set}), "application/json; charset=utf-8"
