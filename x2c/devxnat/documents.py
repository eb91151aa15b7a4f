"""Single-object answers: the JSON documents xnatpy reads (``?format=json``), the XML pyxnat
reads (``?format=xml``), resource catalogs, listing rows, and XNAT-style error pages."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any
from xml.sax.saxutils import quoteattr

from x2c.devxnat.schema import XNAT_NS
from x2c.devxnat.store import Json

CAT_NS = "http://nrg.wustl.edu/catalog"


def error_page(status: int, reason: str, detail: str) -> str:
    """The HTML body sent with an error status, shaped like XNAT's (Restlet's) status page.

    Like the real page it is HTML, not XML (note the unclosed ``<br>``): pyxnat 1.6's
    ``parse_error_message`` crashes with UnboundLocalError on a well-formed page whose ``<h3>``
    has no child elements, and only works because XNAT's pages do not parse as XML.
    """
    return (
        "<html>\n<head>\n   <title>Status page</title>\n</head>\n"
        '<body style="font-family: sans-serif;">\n'
        f"<h3>{html.escape(reason)}</h3>\n<p>{html.escape(detail)}</p>\n"
        f"<p>HTTP status {status}.<br>\nPlease continue your visit at the "
        '<a href="/">home page</a>.\n</p>\n</body>\n</html>\n'
    )


def java_date(stamp: str) -> str:
    """A listing timestamp (``2023-05-02 10:15:00.001``) as a document's ``meta/start_date``
    prints it: Java's ``Date.toString()`` form, ``Tue May 02 10:15:00 UTC 2023`` (recorded in
    tests/data/xnat/recorded/experiment_document_xnatpy.json). Empty when ``stamp`` is."""
    if not stamp:
        return ""
    t = dt.datetime.strptime(stamp.split(".", 1)[0], "%Y-%m-%d %H:%M:%S")
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return f"{days[t.weekday()]} {months[t.month - 1]} {t:%d %H:%M:%S} UTC {t.year}"


def _item(xsi_type: str, fields: dict[str, Any], children: list[Json], start: str) -> Json:
    # Recorded documents: ``create_event_id`` is a number, ``isHistory`` a boolean, unset fields
    # are left out.
    return {
        "children": children,
        "meta": {
            "create_event_id": 1,
            "xsi:type": xsi_type,
            "isHistory": False,
            "start_date": java_date(start),
        },
        "data_fields": {k: v for k, v in fields.items() if v not in (None, "")},
    }


def _child(field: str, items: list[Json]) -> Json:
    return {"field": field, "items": items}


def _resource_items(resources: dict[str, Json]) -> list[Json]:
    return [
        _item(
            "xnat:resourceCatalog",
            {
                "xnat_abstractresource_id": res["xnat_abstractresource_id"],
                "label": res["label"],
                "format": res.get("format", ""),
                "content": res.get("content", ""),
                "file_count": len(res["files"]),
                "file_size": sum(f["size"] for f in res["files"].values()),
            },
            [],
            res.get("insert_date", ""),
        )
        for res in resources.values()
    ]


def project_fields(p: Json) -> dict[str, Any]:
    """The data fields of a project document."""
    return {
        "ID": p["ID"],
        "name": p["name"],
        "secondary_ID": p.get("secondary_ID", ""),
        "description": p.get("description", ""),
    }


def subject_fields(s: Json) -> dict[str, Any]:
    """The data fields of a subject document."""
    return {"ID": s["ID"], "project": s["project"], "label": s["label"]}


def experiment_fields(e: Json) -> dict[str, Any]:
    """The data fields of an experiment document; like XNAT's, they carry the accession ID twice,
    as ``ID`` and as a lower-case ``id``."""
    return {
        "ID": e["ID"],
        "id": e["ID"],
        "project": e["project"],
        "label": e["label"],
        "subject_ID": e["subject_ID"],
        "date": e.get("date", ""),
        "modality": e.get("modality", ""),
    }


def scan_fields(e: Json, sc: Json) -> dict[str, Any]:
    """The data fields of a scan document; numeric fields are JSON numbers there (XNAT's Image
    Session Scans API page: ``xnat_imagescandata_id`` and ``frames``), unlike in listings."""
    return {
        "xnat_imagescandata_id": sc.get("xnat_imagescandata_id"),
        "frames": sc.get("frames"),
        "ID": sc["ID"],
        "type": sc.get("type", ""),
        "image_session_ID": e["ID"],
        "series_description": sc.get("series_description", ""),
        "quality": sc.get("quality", ""),
        "note": sc.get("note", ""),
    }


def object_json(kind: str, rec: Json, experiment: Json | None = None) -> Json:
    """The ``{"items": [{"data_fields", "meta", "children"}]}`` document of one object."""
    start = rec.get("insert_date", "")
    children = []
    if rec.get("resources"):
        children.append(_child("resources/resource", _resource_items(rec["resources"])))
    if kind == "project":
        item = _item("xnat:projectData", project_fields(rec), children, start)
    elif kind == "subject":
        item = _item("xnat:subjectData", subject_fields(rec), children, start)
    elif kind == "experiment":
        scans = [
            _item(sc["xsiType"], scan_fields(rec, sc), [], start) for sc in rec["scans"].values()
        ]
        if scans:
            children.append(_child("scans/scan", scans))
        item = _item(rec["xsiType"], experiment_fields(rec), children, start)
    else:
        assert experiment is not None
        item = _item(rec["xsiType"], scan_fields(experiment, rec), children, start)
    return {"items": [item]}


def object_xml(kind: str, rec: Json, experiment: Json | None = None) -> str:
    """A small XML document of one object, for clients asking ``format=xml``."""
    if kind == "project":
        tag, fields = "xnat:Project", project_fields(rec)
    elif kind == "subject":
        tag, fields = "xnat:Subject", subject_fields(rec)
    elif kind == "experiment":
        tag, fields = "xnat:MRSession", experiment_fields(rec)
        fields.pop("id")  # the JSON form's lower-case copy; XML has the ID attribute
    else:
        assert experiment is not None
        tag, fields = "xnat:MRScan", scan_fields(experiment, rec)
        for json_only in ("xnat_imagescandata_id", "frames"):
            fields.pop(json_only)
    attrs = "".join(
        f" {k}={quoteattr(str(v))}"
        for k, v in fields.items()
        if k in ("ID", "project", "label", "type") and v
    )
    body = "".join(
        f"<xnat:{k}>{html.escape(str(v))}</xnat:{k}>"
        for k, v in fields.items()
        if k not in ("ID", "project", "label", "type") and v
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<{tag}{attrs} xmlns:xnat="{XNAT_NS}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{XNAT_NS} /schemas/xnat/xnat.xsd">{body}</{tag}>\n'
    )


def catalog_xml(res: Json) -> str:
    """The catalog document XNAT returns for a resource (``<cat:Catalog>`` with its entries)."""
    entries = "".join(
        f"<cat:entry URI={quoteattr(rel)} name={quoteattr(rel.rsplit('/', 1)[-1])} "
        f"ID={quoteattr(rel)} digest={quoteattr(meta['md5'])} "
        f"format={quoteattr(meta.get('format', ''))} "
        f"content={quoteattr(meta.get('content', ''))}/>"
        for rel, meta in sorted(res["files"].items())
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<cat:Catalog ID={quoteattr(str(res['xnat_abstractresource_id']))} "
        f'xmlns:cat="{CAT_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f"<cat:entries>{entries}</cat:entries></cat:Catalog>\n"
    )


def resource_row(res: Json, category: str, owner_id: str, owner_desc: str) -> dict[str, str]:
    """One row of a resources listing, with every value a string."""
    return {
        "xnat_abstractresource_id": str(res["xnat_abstractresource_id"]),
        "label": res["label"],
        "element_name": "xnat:resourceCatalog",
        "category": category,
        "cat_id": owner_id,
        "cat_desc": owner_desc,
        "format": res.get("format", ""),
        "content": res.get("content", ""),
        "tags": res.get("tags", ""),
        "file_count": str(len(res["files"])),
        "file_size": str(sum(f["size"] for f in res["files"].values())),
    }


def file_row(res: Json, rel: str, meta: Json, base_uri: str, collection: str) -> dict[str, str]:
    """One row of a files listing; ``URI`` is the download address under ``base_uri``."""
    return {
        "Name": rel.rsplit("/", 1)[-1],
        "Size": str(meta["size"]),
        "URI": f"{base_uri}/files/{rel}",
        "collection": collection,
        "file_tags": meta.get("tags", ""),
        "file_format": meta.get("format", ""),
        "file_content": meta.get("content", ""),
        "cat_ID": str(res["xnat_abstractresource_id"]),
        "digest": meta["md5"],
    }
