"""``POST /data/search``: XNAT's search engine for the documents pyxnat and xnatpy build.

A search document is an ``xdat:bundle``: a ``root_element_name`` (one row per object of that
type, the data-type hierarchy included), ``search_field`` columns (``element_name`` +
``field_ID``) and a ``search_where`` tree of ``criteria`` (``schema_field``,
``comparison_type``, ``value``) joined by ``method`` AND/OR, with nested ``child_set``s.

Fields are named three ways and all are accepted: display-field IDs (``LABEL``,
``SESSION_ID``; pyxnat), xpaths (``xnat:mrSessionData/project``; xnatpy) and shortcuts. A column
is answered under its display-field ID in lower case (``session_id``, ``label``; xnatpy formats
its object URIs from ``project``, ``subject_id`` and ``session_id``), a column of another
element under ``<element>_<field>`` (``xnat_subjectdata_label``), which pyxnat's fuzzy header
matching finds. No recorded search response was found (tests/data/xnat/recorded/README.md).
Anything else (an unknown root, field or comparison, a custom-field map) is refused with
:class:`SearchError` (a 400), never answered with an empty table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from xml.etree import ElementTree

from x2c.devxnat import datatypes

XDAT = "{http://nrg.wustl.edu/security}"
MAX_DOCUMENT_BYTES = 1 << 20

# Display-field IDs (and the shortcuts and xpath fields that name the same thing) per kind of
# root, mapped to the row field that holds the value.
_SESSION_FIELDS = {
    "session_id": "ID",
    "expt_id": "ID",
    "id": "ID",
    "label": "label",
    "project": "project",
    "subject_id": "subject_ID",
    "date": "date",
    "insert_date": "insert_date",
    "meta/insert_date": "insert_date",
    "last_modified": "last_modified",
    "meta/last_modified": "last_modified",
    "xsitype": "xsiType",
    "modality": "modality",
}
_SUBJECT_FIELDS = {
    "subject_id": "ID",
    "id": "ID",
    "subject_label": "label",
    "label": "label",
    "project": "project",
    "insert_date": "insert_date",
}
# Subject fields an experiment search may ask for (xnat:subjectData/...).
_SUBJECT_OF_SESSION = {"subject_id": "subject_ID", "id": "subject_ID", "label": "subject_label"}
_HEADER_OF_ID = {"session": "session_id", "subject": "subject_id"}


class SearchError(ValueError):
    """A search document devxnat cannot answer faithfully; the message says what and why."""


@dataclass(frozen=True)
class Column:
    """One answer column: its CSV/JSON header and the row field it reads."""

    header: str
    field: str


def _kind(root: str) -> str:
    if datatypes.is_a(root, "xnat:subjectData"):
        return "subject"
    if datatypes.is_a(root, "xnat:subjectAssessorData"):
        return "session"
    raise SearchError(
        f"search root {root!r} is not supported: search xnat:subjectData or a session type"
        " (xnat:mrSessionData, xnat:imageSessionData, ...)"
    )


def _field(kind: str, root: str, element: str, name: str) -> Column:
    """The column for field ``name`` of ``element`` in a search rooted at ``root``."""
    field = name.strip()
    if "_FIELD_MAP=" in field.upper():
        raise SearchError(f"custom-field search {field!r} is not supported")
    if "/" in field and ":" in field.split("/", 1)[0]:  # an xpath: xnat:mrSessionData/project
        element, field = field.split("/", 1)
    key = field.lower()
    own = element.lower() == root.lower() or datatypes.is_a(root, element)
    if own:
        table = _SESSION_FIELDS if kind == "session" else _SUBJECT_FIELDS
        if key in table:
            header = _HEADER_OF_ID[kind] if table[key] == "ID" else key.split("/")[-1]
            return Column(header, table[key])
    elif (
        kind == "session"
        and datatypes.is_a(element, "xnat:subjectData")
        and key in _SUBJECT_OF_SESSION
    ):
        return Column(f"xnat_subjectdata_{key}", _SUBJECT_OF_SESSION[key])
    raise SearchError(f"search field {element}/{name} is not supported for a {root} search")


def _parse(body: bytes) -> ElementTree.Element:
    if len(body) > MAX_DOCUMENT_BYTES:
        raise SearchError(f"search document over {MAX_DOCUMENT_BYTES} bytes")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise SearchError("search documents with a DTD or entities are refused")
    try:
        return ElementTree.fromstring(body)  # noqa: S314 - no DTD, checked above
    except ElementTree.ParseError as exc:
        raise SearchError(f"the search document is not XML: {exc}") from exc


def _text(node: ElementTree.Element, tag: str) -> str:
    child = node.find(XDAT + tag)
    return (child.text or "").strip() if child is not None else ""


Test = Callable[[Mapping[str, str]], bool]


def _like(pattern: str) -> re.Pattern[str]:
    """SQL's LIKE as a regular expression: ``%`` any run, ``_`` any one character, no case."""
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "=": lambda a, b: a.lower() == b.lower(),
    "!=": lambda a, b: a.lower() != b.lower(),
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "LIKE": lambda a, b: _like(b).fullmatch(a) is not None,
}


def _criterion(field: str, compare: Callable[[str, str], bool], value: str) -> Test:
    return lambda row: compare(row.get(field, ""), value)


def _criteria(node: ElementTree.Element, kind: str, root: str) -> Test:
    method = (node.get("method") or "AND").upper()
    if method not in ("AND", "OR"):
        raise SearchError(f"search method {method!r} is not supported: use AND or OR")
    tests: list[Test] = []
    for child in node:
        if child.tag == XDAT + "child_set":
            tests.append(_criteria(child, kind, root))
        elif child.tag == XDAT + "criteria":
            schema_field = _text(child, "schema_field")
            element, _, name = schema_field.partition("/")
            column = _field(kind, root, element, name)
            op = _text(child, "comparison_type").upper()
            compare = _COMPARE.get(op)
            if compare is None:
                raise SearchError(
                    f"comparison {op!r} on {schema_field} is not supported: use one of "
                    + ", ".join(_COMPARE)
                )
            tests.append(_criterion(column.field, compare, _text(child, "value")))
    combine = all if method == "AND" else any
    return lambda row: combine(test(row) for test in tests)


@dataclass(frozen=True)
class Search:
    """A parsed search: what to list, which columns to answer, which rows to keep."""

    root: str
    kind: str
    columns: list[Column]
    keep: Test


def parse_search(body: bytes) -> Search:
    """Parse a search document; raises :class:`SearchError` for anything not supported."""
    bundle = _parse(body)
    if bundle.tag != XDAT + "bundle":
        raise SearchError(f"expected an xdat:bundle search document, got {bundle.tag}")
    root = _text(bundle, "root_element_name")
    if not root:
        raise SearchError("the search document names no root_element_name")
    kind = _kind(root)
    columns: list[Column] = []
    for node in bundle.findall(XDAT + "search_field"):
        column = _field(kind, root, _text(node, "element_name"), _text(node, "field_ID"))
        if column not in columns:
            columns.append(column)
    if not columns:
        columns.append(Column(_HEADER_OF_ID[kind], "ID"))
    where = bundle.find(XDAT + "search_where")
    keep = _criteria(where, kind, root) if where is not None else (lambda row: True)
    return Search(root, kind, columns, keep)
