"""Answering reads: listings, object documents, catalogs, single-file and zip downloads."""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse

from x2c.devxnat import datatypes, listings
from x2c.devxnat.archives import UnsafeArchiveError, clean_relpath, stream_zip
from x2c.devxnat.documents import catalog_xml, file_row, object_json, object_xml, resource_row
from x2c.devxnat.paths import Target
from x2c.devxnat.responses import HTTPError
from x2c.devxnat.search import SearchError, parse_search
from x2c.devxnat.store import Json, Store, User, visible

log = logging.getLogger(__name__)


class Reader:
    """The GET handlers over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def listing(
        self, level: listings.Level, rows: list[dict[str, str]], params: dict[str, str]
    ) -> Response:
        fmt = params.get("format", "json").lower()
        if fmt not in ("json", "csv"):
            fmt = "json"
        try:
            kept = listings.page(level, listings.filter_rows(level, rows, params), params)
        except listings.BadPaging as exc:
            # XNAT's cached-search paging answers 422 to a non-numeric limit/offset.
            raise HTTPError(422, "Unprocessable Entity", str(exc)) from exc
        root = params.get("xsiType") if level is listings.EXPERIMENTS else None
        columns = listings.choose_columns(level, params.get("columns"), root)
        body, media = listings.render(level, kept, columns, fmt)
        return Response(body, media_type=media)

    def search(self, body: bytes, user: User, params: dict[str, str]) -> Response:
        """Answer ``POST /data/search``: the rows of the document's root type that ``user`` may
        read and its criteria keep, in CSV (what pyxnat and xnatpy ask for) or JSON."""
        try:
            query = parse_search(body)
        except SearchError as exc:
            raise HTTPError(400, "Bad Request", f"search: {exc}") from exc
        with self.store.lock:
            if query.kind == "subject":
                rows = [
                    self._subject_row(s)
                    for s in self.store.index["subjects"].values()
                    if visible(user, s)
                ]
            else:
                rows = [
                    self._experiment_row(e)
                    for e in self.store.index["experiments"].values()
                    if visible(user, e) and datatypes.is_a(e["xsiType"], query.root)
                ]
        kept = [row for row in rows if query.keep(row)]
        columns = [(c.header, c.field) for c in query.columns]
        fmt = "csv" if params.get("format", "").lower() == "csv" else "json"
        body_text, media = listings.render(listings.SEARCH, kept, columns, fmt)
        return Response(body_text, media_type=media)

    def get(self, t: Target, user: User, params: dict[str, str]) -> Response:
        """Answer a GET (or HEAD) for ``t``: a listing, a document, a catalog, a file, a zip."""
        if not t.found:
            raise HTTPError(404, "Not Found", f"{t.kind} {t.key}")
        fmt = params.get("format", "").lower()
        with self.store.lock:
            if t.kind == "projects" and (t.subject is not None or t.experiment is not None):
                shared = t.experiment if t.experiment is not None else t.subject
                assert shared is not None
                ids = [shared["project"], *shared.get("shares", {})]
                rows = [
                    self._project_row(self.store.index["projects"][pid])
                    for pid in ids
                    if pid in self.store.index["projects"] and user.can_read(pid)
                ]
                return self.listing(listings.PROJECTS, rows, params)
            if t.kind == "share":
                assert t.share_project is not None
                project = self.store.project(t.share_project)
                if project is None or not user.can_read(t.share_project):
                    raise HTTPError(404, "Not Found", f"project {t.share_project}")
                return JSONResponse(object_json("project", project))
            if t.kind == "projects":
                rows = [
                    self._project_row(p)
                    for p in self.store.index["projects"].values()
                    if user.can_read(p["ID"])
                ]
                return self.listing(listings.PROJECTS, rows, params)
            if t.kind == "subjects":
                subjects = (
                    self.store.subjects_of(t.project["ID"])
                    if t.project is not None
                    else iter(self.store.index["subjects"].values())
                )
                rows = [self._subject_row(s) for s in subjects if visible(user, s)]
                return self.listing(listings.SUBJECTS, rows, params)
            if t.kind == "experiments":
                if t.subject is not None:
                    exps = self.store.experiments_of(t.subject["project"], t.subject["ID"])
                elif t.project is not None:
                    exps = self.store.experiments_of(t.project["ID"])
                else:
                    exps = iter(self.store.index["experiments"].values())
                readable = [e for e in exps if visible(user, e)]
                scan_type = listings.scan_type_wanted(listings.EXPERIMENTS, params)
                if scan_type is None:
                    rows = [self._experiment_row(e) for e in readable]
                else:
                    rows = [
                        self._experiment_row(e) | scan_row
                        for e in readable
                        for scan_row in self._scan_columns(e, scan_type)
                    ]
                return self.listing(listings.EXPERIMENTS, rows, params)
            if t.kind in ("assessors", "reconstructions"):
                return self.listing(listings.EXPERIMENTS, [], params)
            if t.kind == "scans":
                assert t.experiment is not None
                rows = [self._scan_row(t.experiment, sc) for sc in t.experiment["scans"].values()]
                return self.listing(listings.SCANS, rows, params)
            if t.kind == "resources":
                owner = t.owner()
                if owner is None:
                    raise HTTPError(404, "Not Found", t.template)
                rows = [self._resource_row(owner, r) for r in owner[1]["resources"].values()]
                return self.listing(listings.RESOURCES, rows, params)
            if t.kind == "resource":
                assert t.resource is not None
                if fmt == "zip":
                    return self._zip(t, [(t.resource, self._res_base(t))])
                return Response(catalog_xml(t.resource), media_type="application/xml")
            if t.kind == "files":
                sources = self._file_sources(t)
                if fmt == "zip":
                    return self._zip(t, sources)
                rows = [
                    file_row(res, quote(rel, safe="/"), meta, base, res["label"])
                    for res, base in sources
                    for rel, meta in sorted(res["files"].items())
                ]
                return self.listing(listings.FILES, rows, params)
            if t.kind == "file":
                return self._download(t)
            kind_rec = self._object(t)
            if fmt == "xml":
                return Response(object_xml(*kind_rec), media_type="application/xml")
            return JSONResponse(object_json(*kind_rec))

    def _object(self, t: Target) -> tuple[str, Json, Json | None]:
        if t.kind == "scan":
            scan = t.scan
            if scan is None:
                raise HTTPError(404, "Not Found", f"scan {t.scan_selector}")
            return "scan", scan, t.experiment
        rec = {"project": t.project, "subject": t.subject, "experiment": t.experiment}.get(t.kind)
        if rec is None:
            raise HTTPError(404, "Not Found", t.template)
        return t.kind, rec, None

    def _project_row(self, p: Json) -> dict[str, str]:
        return {
            "ID": p["ID"],
            "secondary_ID": p.get("secondary_ID", ""),
            "name": p["name"],
            "description": p.get("description", ""),
            "pi_firstname": p.get("pi_firstname", ""),
            "pi_lastname": p.get("pi_lastname", ""),
            "URI": f"/data/projects/{p['ID']}",
            "insert_date": p.get("insert_date", ""),
            "xsiType": "xnat:projectData",
        }

    def _subject_row(self, s: Json) -> dict[str, str]:
        return {
            "ID": s["ID"],
            "project": s["project"],
            "label": s["label"],
            "insert_date": s.get("insert_date", ""),
            "insert_user": s.get("insert_user", ""),
            "URI": f"/data/subjects/{s['ID']}",
            "xsiType": "xnat:subjectData",
            "last_modified": s.get("last_modified", s.get("insert_date", "")),
            "subject_label": s["label"],
        }

    def _experiment_row(self, e: Json) -> dict[str, str]:
        subject = self.store.index["subjects"].get(e["subject_ID"], {})
        return {
            "xnat:subjectassessordata/id": e["ID"],
            "ID": e["ID"],
            "project": e["project"],
            "date": e.get("date", ""),
            "xsiType": e["xsiType"],
            "label": e["label"],
            "insert_date": e.get("insert_date", ""),
            "URI": f"/data/experiments/{e['ID']}",
            "last_modified": e.get("last_modified", ""),
            "subject_ID": e["subject_ID"],
            "subject_label": subject.get("label", ""),
            "subject_project": subject.get("project", ""),
            "session_ID": e["ID"],
            "session_label": e["label"],
            "modality": e.get("modality", ""),
            "note": e.get("note", ""),
            "insert_user": e.get("insert_user", ""),
        }

    def _scan_row(self, e: Json, sc: Json) -> dict[str, str]:
        return {
            "xnat_imagescandata_id": str(sc.get("xnat_imagescandata_id", "")),
            "ID": sc["ID"],
            "type": sc.get("type", ""),
            "quality": sc.get("quality", ""),
            "xsiType": sc["xsiType"],
            "note": sc.get("note", ""),
            "series_description": sc.get("series_description", ""),
            "URI": f"/data/experiments/{e['ID']}/scans/{sc['ID']}",
            "image_session_ID": e["ID"],
            "frames": str(sc.get("frames", "")),
            "UID": sc.get("UID", ""),
        }

    def _scan_columns(self, e: Json, scan_type: str) -> list[dict[str, str]]:
        """The scan fields (``scan/ID``...) of each scan of ``e`` of ``scan_type``: one row per
        scan, or one empty row when it has none (XNAT joins scans to sessions this way)."""
        rows = [
            {listings.SCAN_PREFIX + k: v for k, v in self._scan_row(e, sc).items()}
            for sc in e["scans"].values()
            if datatypes.is_a(sc["xsiType"], scan_type)
        ]
        return rows or [{}]

    def _resource_row(self, owner: tuple[str, Json], res: Json) -> dict[str, str]:
        kind, rec = owner
        category = "scans" if kind == "scan" else "resources"
        desc = rec.get("type", "") if kind == "scan" else ""
        return resource_row(res, category, rec["ID"], desc)

    def _owner_base(self, t: Target, kind: str, rec: Json) -> str:
        if kind == "scan":
            assert t.experiment is not None
            return f"/data/experiments/{t.experiment['ID']}/scans/{rec['ID']}"
        if kind == "experiment":
            return f"/data/experiments/{rec['ID']}"
        if kind == "subject":
            return f"/data/projects/{rec['project']}/subjects/{rec['ID']}"
        return f"/data/projects/{rec['ID']}"

    def _res_base(self, t: Target, owner: tuple[str, Json] | None = None) -> str:
        owner = owner or t.owner()
        assert owner is not None and t.resource is not None
        base = self._owner_base(t, *owner)
        return f"{base}/resources/{t.resource['xnat_abstractresource_id']}"

    def _file_sources(self, t: Target) -> list[tuple[Json, str]]:
        """The resources a ``files`` path covers, each with its URI base."""
        if t.resource is not None:
            return [(t.resource, self._res_base(t))]
        if t.scan_selector is not None:
            assert t.experiment is not None
            out = []
            for sc in t.scans:
                base = self._owner_base(t, "scan", sc)
                for res in sc["resources"].values():
                    out.append((res, f"{base}/resources/{res['xnat_abstractresource_id']}"))
            return out
        owner = t.owner()
        if owner is None:
            raise HTTPError(404, "Not Found", t.template)
        base = self._owner_base(t, *owner)
        out = [
            (res, f"{base}/resources/{res['xnat_abstractresource_id']}")
            for res in owner[1]["resources"].values()
        ]
        if owner[0] == "experiment":
            for sc in owner[1]["scans"].values():
                sbase = self._owner_base(t, "scan", sc)
                for res in sc["resources"].values():
                    out.append((res, f"{sbase}/resources/{res['xnat_abstractresource_id']}"))
        return out

    def _download(self, t: Target) -> Response:
        assert t.file_rel is not None
        sources = self._file_sources(t)
        try:
            rel = clean_relpath(t.file_rel)
        except UnsafeArchiveError as exc:
            raise HTTPError(404, "Not Found", t.file_rel) from exc
        for res, _ in sources:
            if rel in res["files"]:
                path = self.store.file_path(res, rel)
                return FileResponse(
                    path,
                    media_type="application/octet-stream",
                    filename=posixpath.basename(rel),
                    content_disposition_type="attachment",
                )
        raise HTTPError(404, "Not Found", f"file {t.file_rel}")

    def _zip(self, t: Target, sources: list[tuple[Json, str]]) -> Response:
        """A zip of ``sources`` laid out as XNAT does: session/scans/ID-type/resources/L/files."""
        entries: list[tuple[str, Path]] = []
        for res, base in sources:
            prefix = self._zip_prefix(res, base)
            for rel in sorted(res["files"]):
                entries.append((f"{prefix}/{rel}", self.store.file_path(res, rel)))
        name = (t.experiment or t.subject or t.project or {"ID": "download"})["ID"]
        if t.experiment is not None:
            name = t.experiment["label"]
        return StreamingResponse(
            _guarded(stream_zip(entries)),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
        )

    def _zip_prefix(self, res: Json, base: str) -> str:
        parts = base.strip("/").split("/")
        label = res["label"]
        # base: data/experiments/E/scans/S/resources/R | data/experiments/E/resources/R | ...
        if "experiments" in parts:
            exp = self.store.index["experiments"][parts[parts.index("experiments") + 1]]
            session = exp["label"]
            if "scans" in parts:
                sc = exp["scans"][parts[parts.index("scans") + 1]]
                scan_dir = f"{sc['ID']}-{_safe(sc.get('type', ''))}"
                return f"{session}/scans/{scan_dir}/resources/{label}/files"
            return f"{session}/resources/{label}/files"
        if "subjects" in parts:
            subj = self.store.index["subjects"][parts[parts.index("subjects") + 1]]
            return f"{subj['label']}/resources/{label}/files"
        return f"{parts[parts.index('projects') + 1]}/resources/{label}/files"


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in text)


def _guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Log, rather than crash on, a file vanishing in the middle of a zip download."""
    try:
        yield from chunks
    except OSError:
        log.exception("zip download interrupted")
        raise
