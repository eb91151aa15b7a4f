"""The Starlette application: authentication, dispatch, and one handler per kind of request.

Every request is counted under ``METHOD route-template`` (``GET /data/projects/{project}``) so
tests and benchmarks can assert how many calls a piece of client code makes
(``GET /x2c/requests``, admin only; ``DELETE`` resets). Routes nobody handles are logged with
their method and path, to trace what a client asks for.
"""

from __future__ import annotations

import collections
import contextlib
import html
import json
import logging
import posixpath
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import anyio
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from x2c.devxnat import listings
from x2c.devxnat.archives import (
    BadArchiveError,
    UnsafeArchiveError,
    clean_relpath,
    is_archive_name,
    stream_zip,
)
from x2c.devxnat.auth import BadCredentials, Sessions, authenticate, check_password
from x2c.devxnat.documents import (
    catalog_xml,
    error_page,
    file_row,
    object_json,
    object_xml,
    resource_row,
)
from x2c.devxnat.paths import NotFound, Target, UnknownRoute, resolve, strip_prefix
from x2c.devxnat.schema import SCHEMA_NAMES, element_rows, field_rows, xnat_schema
from x2c.devxnat.store import Json, Store, User, new_resource, now_stamp
from x2c.devxnat.uploads import (
    LayoutError,
    Received,
    commit,
    receive_file,
    receive_stream,
    unpack,
)

log = logging.getLogger(__name__)

XNAT_VERSION = "1.8.10"


class HTTPError(Exception):
    """Raised by handlers to answer with an XNAT-style error page."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail


def _error(status: int, reason: str, detail: str = "") -> Response:
    headers = {"WWW-Authenticate": 'Basic realm="XNAT"'} if status == 401 else None
    return Response(
        error_page(status, reason, detail or reason),
        status_code=status,
        media_type="text/html",
        headers=headers,
    )


class Counter:
    """Requests per ``METHOD template``, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()

    def add(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


def _param(params: dict[str, str], name: str) -> str | None:
    """A creation field given as ``name`` or as an xpath ending in ``/name`` (any case)."""
    wanted = name.lower()
    for key, value in params.items():
        k = key.lower()
        if k == wanted or k.endswith("/" + wanted):
            return value
    return None


def _true(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


class DevXnat:
    """The server's state and request handlers; :meth:`app` builds the ASGI application."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sessions = Sessions()
        self.counter = Counter()

    def app(self) -> Starlette:
        """The Starlette application serving every route."""
        methods = ["GET", "HEAD", "PUT", "POST", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", self.dispatch, methods=methods)])

    # -- dispatch --------------------------------------------------------------------------

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        method = request.method
        try:
            user = authenticate(request, self.store, self.sessions)
        except BadCredentials:
            self.counter.add(f"{method} {self._template_guess(path)}")
            return _error(401, "Unauthorized", "The request requires user authentication")
        try:
            return await self._route(request, user, path, method)
        except HTTPError as exc:
            return _error(exc.status, exc.reason, exc.detail)
        except NotFound as exc:
            return _error(404, "Not Found", f"{exc} was not found")
        except Exception:
            # A bad request must never take the server down or leave it half-changed: every
            # change is committed at the end of its handler, so failing here changes nothing.
            log.exception("request failed: %s %s", method, path)
            return _error(500, "Internal Server Error", f"{method} {path} failed")

    def _template_guess(self, path: str) -> str:
        rest = strip_prefix(path)
        return "/data" + (rest or "") if rest is not None else path

    async def _route(self, request: Request, user: User | None, path: str, method: str) -> Response:
        params = dict(request.query_params)
        if path in ("/", "") and method in ("GET", "HEAD"):
            self.counter.add(f"{method} /")
            return self._landing(user)
        if path == "/data/services/auth" and method == "PUT":
            self.counter.add("PUT /data/services/auth")
            return await self._services_auth(request)
        if user is None:
            self.counter.add(f"{method} {self._template_guess(path)}")
            return _error(401, "Unauthorized", "The request requires user authentication")
        if path.startswith("/x2c/"):
            return await self._x2c(request, user, path, method)
        special = self._special(request, user, path, method, params)
        if special is not None:
            return special
        rest = strip_prefix(path)
        if rest is None or rest in ("", "/"):
            self.counter.add(f"{method} {path}")
            log.info("unhandled route: %s %s", method, path)
            raise HTTPError(404, "Not Found", path)
        try:
            target = resolve(self.store, user, rest)
        except NotFound as exc:
            self.counter.add(f"{method} {self._template_guess(path)}")
            if isinstance(exc, UnknownRoute):
                log.info("unhandled route: %s %s", method, path)
            raise
        self.counter.add(f"{method} {target.template}")
        if method in ("GET", "HEAD"):
            return self._get(target, user, params)
        if method in ("PUT", "POST"):
            return await self._write(request, target, user, params, method)
        if method == "DELETE":
            return self._delete(target, user)
        raise HTTPError(405, "Method Not Allowed", method)

    def _landing(self, user: User | None) -> Response:
        if user is None:
            body = (
                "<html><head><title>XNAT</title></head><body>"
                '<form name="form1" method="post" action="/login">'
                "<p>x2c devxnat: log in with HTTP Basic credentials.</p></form></body></html>"
            )
        else:
            body = (
                "<html><head><title>XNAT</title></head><body>"
                '<span id="user_info">Logged in as: &nbsp;'
                '<a id="username-link" href="/app/template/XDATScreen_UpdateUser.vm">'
                f"{html.escape(user.name)}</a>"
                "</span></body></html>"
            )
        return Response(body, media_type="text/html")

    async def _services_auth(self, request: Request) -> Response:
        form = await request.form()
        name = str(form.get("username") or "")
        password = str(form.get("password") or "")
        user = check_password(self.store, name, password)
        if user is None:
            return _error(401, "Unauthorized", "Login attempt failed. Please try again.")
        token = self.sessions.open(user.name)
        resp = PlainTextResponse(token)
        resp.set_cookie("JSESSIONID", token, path="/", httponly=True)
        return resp

    def _special(
        self, request: Request, user: User, path: str, method: str, params: dict[str, str]
    ) -> Response | None:
        """Session, version, schema and search-element routes."""
        key = f"{method} {path}"
        if path == "/data/JSESSION":
            self.counter.add(f"{method} /data/JSESSION")
            if method == "DELETE":
                token = request.cookies.get("JSESSIONID")
                if token:
                    self.sessions.close(token)
                return PlainTextResponse("")
            token = self.sessions.open(user.name)
            resp = PlainTextResponse(token)
            resp.set_cookie("JSESSIONID", token, path="/", httponly=True)
            return resp
        if path == "/data/auth" and method == "GET":
            self.counter.add(key)
            return PlainTextResponse(f"User '{user.name}' is logged in")
        if path in ("/data/version", "/data/buildInfo", "/data/uptime"):
            self.counter.add(key)
            raise HTTPError(404, "Not Found", path)
        if path == "/xapi/siteConfig/buildInfo":
            self.counter.add(key)
            return JSONResponse(
                {
                    "version": XNAT_VERSION,
                    "buildNumber": "x2c",
                    "commit": "devxnat",
                    "isDirty": "false",
                    "Application-Name": "XNAT",
                }
            )
        if path == "/xapi/siteConfig/uptime":
            self.counter.add(key)
            return JSONResponse({"days": 0, "hours": 0, "minutes": 0, "seconds": 0})
        if path == "/xapi/schemas":
            self.counter.add(key)
            return JSONResponse(SCHEMA_NAMES)
        if path in ("/xapi/schemas/xnat", "/schemas/xnat/xnat.xsd", "/schemas/xnat"):
            self.counter.add(f"{method} /xapi/schemas/{{schema}}")
            return Response(xnat_schema(), media_type="application/xml")
        if path.startswith("/xapi/schemas/"):
            self.counter.add(f"{method} /xapi/schemas/{{schema}}")
            raise HTTPError(404, "Not Found", f"no schema {path.rsplit('/', 1)[-1]}")
        if path == "/data/search/elements":
            self.counter.add(key)
            return self._listing(listings_level_elements(), element_rows(), params)
        if path.startswith("/data/search/elements/"):
            self.counter.add(f"{method} /data/search/elements/{{element}}")
            rows = field_rows(path.rsplit("/", 1)[-1])
            if rows is None:
                raise HTTPError(404, "Not Found", path)
            return self._listing(listings_level_fields(), rows, params)
        return None

    async def _x2c(self, request: Request, user: User, path: str, method: str) -> Response:
        """Admin-only helpers: the request counter and extra accounts."""
        if not user.admin:
            raise HTTPError(403, "Forbidden", "x2c admin endpoints need the admin account")
        if path == "/x2c/requests":
            if method == "DELETE":
                self.counter.reset()
                return PlainTextResponse("")
            return JSONResponse(self.counter.snapshot())
        if path.startswith("/x2c/users/") and method == "PUT":
            name = path[len("/x2c/users/") :]
            try:
                body = json.loads(await request.body())
                self.store.put_user(
                    name,
                    str(body["password"]),
                    [str(p) for p in body.get("projects_readable", [])],
                    bool(body.get("can_write", False)),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise HTTPError(400, "Bad Request", f"user document: {exc}") from exc
            return PlainTextResponse(name, status_code=201)
        raise HTTPError(404, "Not Found", path)

    # -- reading ---------------------------------------------------------------------------

    def _listing(
        self, level: listings.Level, rows: list[dict[str, str]], params: dict[str, str]
    ) -> Response:
        fmt = params.get("format", "json").lower()
        if fmt not in ("json", "csv"):
            fmt = "json"
        kept = listings.filter_rows(level, rows, params)
        columns = listings.choose_columns(level, params.get("columns"))
        body, media = listings.render(level, kept, columns, fmt)
        return Response(body, media_type=media)

    def _get(self, t: Target, user: User, params: dict[str, str]) -> Response:
        if not t.found:
            raise HTTPError(404, "Not Found", f"{t.kind} {t.key}")
        fmt = params.get("format", "").lower()
        with self.store.lock:
            if t.kind == "projects":
                rows = [
                    self._project_row(p)
                    for p in self.store.index["projects"].values()
                    if user.can_read(p["ID"])
                ]
                return self._listing(listings.PROJECTS, rows, params)
            if t.kind == "subjects":
                subjects = (
                    self.store.subjects_of(t.project["ID"])
                    if t.project is not None
                    else iter(self.store.index["subjects"].values())
                )
                rows = [self._subject_row(s) for s in subjects if user.can_read(s["project"])]
                return self._listing(listings.SUBJECTS, rows, params)
            if t.kind == "experiments":
                if t.project is not None:
                    sid = t.subject["ID"] if t.subject is not None else None
                    exps = self.store.experiments_of(t.project["ID"], sid)
                else:
                    exps = iter(self.store.index["experiments"].values())
                rows = [self._experiment_row(e) for e in exps if user.can_read(e["project"])]
                return self._listing(listings.EXPERIMENTS, rows, params)
            if t.kind in ("assessors", "reconstructions"):
                return self._listing(listings.EXPERIMENTS, [], params)
            if t.kind == "scans":
                assert t.experiment is not None
                rows = [self._scan_row(t.experiment, sc) for sc in t.experiment["scans"].values()]
                return self._listing(listings.SCANS, rows, params)
            if t.kind == "resources":
                owner = t.owner()
                if owner is None:
                    raise HTTPError(404, "Not Found", t.template)
                rows = [self._resource_row(owner, r) for r in owner[1]["resources"].values()]
                return self._listing(listings.RESOURCES, rows, params)
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
                return self._listing(listings.FILES, rows, params)
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

    # -- writing ---------------------------------------------------------------------------

    def _require_write(self, user: User, project_id: str) -> None:
        if not user.may_write(project_id):
            raise HTTPError(403, "Forbidden", f"user {user.name} cannot write to {project_id}")

    async def _write(
        self, request: Request, t: Target, user: User, params: dict[str, str], method: str
    ) -> Response:
        if t.kind in ("file", "files"):
            return await self._upload(request, t, user, params)
        if method == "POST" and t.kind == "resource" and t.found:
            raise HTTPError(409, "Conflict", "Specified resource already exists.")
        with self.store.lock:
            if t.kind == "project":
                return self._put_project(t, user, params)
            if t.kind == "subject":
                return self._put_subject(t, user, params)
            if t.kind == "experiment":
                return self._put_experiment(t, user, params)
            if t.kind == "scan":
                return self._put_scan(t, user, params)
            if t.kind == "resource":
                return self._put_resource(t, user, params)
        raise HTTPError(405, "Method Not Allowed", f"{method} {t.template}")

    def _put_project(self, t: Target, user: User, params: dict[str, str]) -> Response:
        if t.found:
            assert t.project is not None
            self._require_write(user, t.project["ID"])
            return PlainTextResponse(t.project["ID"])
        if not user.admin:
            raise HTTPError(403, "Forbidden", f"user {user.name} cannot create projects")
        assert t.key is not None
        pid = _check_label(t.key)
        self.store.index["projects"][pid] = {
            "ID": pid,
            "name": _param(params, "name") or pid,
            "secondary_ID": _param(params, "secondary_ID") or pid,
            "description": _param(params, "description") or "",
            "pi_firstname": "",
            "pi_lastname": "",
            "insert_date": now_stamp(),
            "resources": {},
        }
        self.store.save()
        return PlainTextResponse(pid, status_code=201)

    def _put_subject(self, t: Target, user: User, params: dict[str, str]) -> Response:
        if t.project is None:
            raise HTTPError(400, "Bad Request", "subjects are created inside a project")
        self._require_write(user, t.project["ID"])
        if t.found:
            assert t.subject is not None
            new_label = params.get("label")
            if new_label:
                t.subject["label"] = _check_label(new_label)
                self.store.save()
            return PlainTextResponse(t.subject["ID"])
        assert t.key is not None
        label = _check_label(_param(params, "label") or t.key)
        sid = self.store.next_id("subject")
        self.store.index["subjects"][sid] = {
            "ID": sid,
            "project": t.project["ID"],
            "label": label,
            "insert_date": now_stamp(),
            "insert_user": user.name,
            "resources": {},
        }
        self.store.save()
        return PlainTextResponse(sid, status_code=201)

    def _put_experiment(self, t: Target, user: User, params: dict[str, str]) -> Response:
        if t.project is None:
            raise HTTPError(400, "Bad Request", "experiments are created inside a project")
        self._require_write(user, t.project["ID"])
        if t.found:
            assert t.experiment is not None
            new_label = params.get("label")
            if new_label:
                t.experiment["label"] = _check_label(new_label)
                t.experiment["last_modified"] = now_stamp()
                self.store.save()
            return PlainTextResponse(t.experiment["ID"])
        subject = t.subject
        if subject is None:
            ref = _param(params, "subject_ID") or _param(params, "subject_label")
            if ref:
                subject = self.store.subject(ref, t.project["ID"])
        if subject is None:
            raise HTTPError(400, "Bad Request", "an experiment needs an existing subject")
        assert t.key is not None
        xsi = params.get("xsiType") or params.get("xsi:type") or "xnat:mrSessionData"
        if not xsi.startswith("xnat:") or not xsi.endswith("SessionData"):
            raise HTTPError(400, "Bad Request", f"unsupported experiment type {xsi}")
        label = _check_label(_param(params, "label") or t.key)
        eid = self.store.next_id("experiment")
        stamp = now_stamp()
        self.store.index["experiments"][eid] = {
            "ID": eid,
            "project": t.project["ID"],
            "subject_ID": subject["ID"],
            "label": label,
            "xsiType": xsi,
            "date": _param(params, "date") or "",
            "modality": _param(params, "modality") or xsi[5:-11].upper(),
            "insert_date": stamp,
            "insert_user": user.name,
            "last_modified": stamp,
            "scans": {},
            "resources": {},
        }
        self.store.save()
        return PlainTextResponse(eid, status_code=201)

    def _put_scan(self, t: Target, user: User, params: dict[str, str]) -> Response:
        assert t.experiment is not None and t.scan_selector is not None
        self._require_write(user, t.experiment["project"])
        # xnatpy PUTs to .../scans/<type>?xnat:mrScanData/ID=<id>: the ID parameter wins.
        scan_id = _check_label(_param(params, "ID") or t.scan_selector)
        existing = t.experiment["scans"].get(scan_id)
        if existing is not None:
            for field in ("type", "series_description", "quality", "note"):
                value = _param(params, field)
                if value is not None:
                    existing[field] = value
            t.experiment["last_modified"] = now_stamp()
            self.store.save()
            return PlainTextResponse(scan_id)
        xsi = params.get("xsiType") or "xnat:mrScanData"
        if not xsi.startswith("xnat:") or not xsi.endswith("ScanData"):
            raise HTTPError(400, "Bad Request", f"unsupported scan type {xsi}")
        t.experiment["scans"][scan_id] = {
            "ID": scan_id,
            "xnat_imagescandata_id": int(self.store.next_id("scan")),
            "xsiType": xsi,
            "type": _param(params, "type") or "",
            "series_description": _param(params, "series_description") or "",
            "quality": _param(params, "quality") or "usable",
            "note": _param(params, "note") or "",
            "resources": {},
        }
        t.experiment["last_modified"] = now_stamp()
        self.store.save()
        return PlainTextResponse(scan_id, status_code=201)

    def _put_resource(self, t: Target, user: User, params: dict[str, str]) -> Response:
        owner = t.owner()
        if owner is None:
            raise HTTPError(404, "Not Found", t.template)
        self._require_write(user, self._project_of(owner))
        if t.found:
            raise HTTPError(409, "Conflict", "Specified resource already exists.")
        assert t.key is not None
        label = _check_label(t.key)
        res = new_resource(self.store, label, params.get("format", ""), params.get("content", ""))
        res["tags"] = params.get("tags", "")
        owner[1]["resources"][label] = res
        self._touch(t)
        self.store.save()
        return PlainTextResponse("", status_code=200)

    def _project_of(self, owner: tuple[str, Json]) -> str:
        kind, rec = owner
        if kind == "project":
            return str(rec["ID"])
        if kind == "scan":
            for e in self.store.index["experiments"].values():
                if any(sc is rec for sc in e["scans"].values()):
                    return str(e["project"])
            raise HTTPError(404, "Not Found", "scan")
        return str(rec["project"])

    def _touch(self, t: Target) -> None:
        if t.experiment is not None:
            t.experiment["last_modified"] = now_stamp()

    async def _upload(
        self, request: Request, t: Target, user: User, params: dict[str, str]
    ) -> Response:
        if t.resource is None:
            raise HTTPError(404, "Not Found", "files are uploaded into an existing resource")
        with self.store.lock:
            owner = t.owner()
            assert owner is not None
            self._require_write(user, self._project_of(owner))
        overwrite = _true(params.get("overwrite"))
        extract = _true(params.get("extract"))
        meta = {k: params.get(k, "") for k in ("format", "content", "tags")}
        ctype = request.headers.get("content-type", "")
        pending: list[tuple[str, Received, str]] = []
        try:
            if ctype.startswith("multipart/form-data"):
                form = await request.form(max_files=10000, max_fields=1000)
                parts = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
                for part in parts:
                    received = await anyio.to_thread.run_sync(receive_file, self.store, part.file)
                    # .../files/NAME names a single part; .../files takes each part's file name
                    name = t.file_rel if t.file_rel and len(parts) == 1 else part.filename
                    pending.append((name or "upload", received, part.filename or name or ""))
                await form.close()
            else:
                if t.file_rel is None:
                    raise HTTPError(400, "Bad Request", "a raw upload needs a file name in the URI")
                received = await receive_stream(self.store, request.stream())
                pending.append((t.file_rel, received, t.file_rel))
            if not pending:
                raise HTTPError(400, "Bad Request", "the request carried no file")
            files: list[tuple[str, Received]] = []
            for name, received, original in pending:
                if extract and is_archive_name(original):
                    prefix = posixpath.dirname(clean_relpath(name))
                    files.extend(
                        await anyio.to_thread.run_sync(
                            unpack, self.store, received, original, prefix
                        )
                    )
                else:
                    files.append((clean_relpath(name), received))
        except (UnsafeArchiveError, BadArchiveError) as exc:
            self._discard(pending)
            raise HTTPError(400, "Bad Request", f"archive refused: {exc}") from exc
        except BaseException:
            self._discard(pending)
            raise
        resource = t.resource
        try:
            outcome = await anyio.to_thread.run_sync(
                commit, self.store, resource, t.experiment, files, overwrite, meta
            )
        except LayoutError as exc:
            raise HTTPError(409, "Conflict", str(exc)) from exc
        if outcome.duplicates:
            return JSONResponse({"duplicates": outcome.duplicates})
        return PlainTextResponse("", status_code=200)

    def _discard(self, pending: list[tuple[str, Received, str]]) -> None:
        for _, received, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                received.path.unlink()

    # -- deleting --------------------------------------------------------------------------

    def _delete(self, t: Target, user: User) -> Response:
        if not t.found:
            raise HTTPError(404, "Not Found", f"{t.kind} {t.key}")
        with self.store.lock:
            if t.kind == "file":
                assert t.resource is not None and t.file_rel is not None
                self._require_write(user, self._project_of(_must(t.owner())))
                rel = clean_relpath(t.file_rel)
                if rel not in t.resource["files"]:
                    raise HTTPError(404, "Not Found", f"file {t.file_rel}")
                del t.resource["files"][rel]
                self._touch(t)
                self.store.save()
                with contextlib.suppress(FileNotFoundError):
                    self.store.file_path(t.resource, rel).unlink()
                return PlainTextResponse("")
            if t.kind == "resource":
                owner = _must(t.owner())
                assert t.resource is not None
                self._require_write(user, self._project_of(owner))
                del owner[1]["resources"][t.resource["label"]]
                self._touch(t)
                self.store.save()
                self._remove_tree(t.resource)
                return PlainTextResponse("")
            if t.kind == "scan" and t.scan is not None:
                assert t.experiment is not None
                self._require_write(user, t.experiment["project"])
                scan = t.experiment["scans"].pop(t.scan["ID"])
                self._touch(t)
                self.store.save()
                for res in scan["resources"].values():
                    self._remove_tree(res)
                return PlainTextResponse("")
            if t.kind == "experiment":
                assert t.experiment is not None
                self._require_write(user, t.experiment["project"])
                self._drop_experiment(t.experiment)
                self.store.save()
                return PlainTextResponse("")
            if t.kind == "subject":
                assert t.subject is not None
                self._require_write(user, t.subject["project"])
                sid = t.subject["ID"]
                for e in list(self.store.experiments_of(t.subject["project"], sid)):
                    self._drop_experiment(e)
                for res in self.store.index["subjects"].pop(sid)["resources"].values():
                    self._remove_tree(res)
                self.store.save()
                return PlainTextResponse("")
        raise HTTPError(405, "Method Not Allowed", f"DELETE {t.template}")

    def _drop_experiment(self, e: Json) -> None:
        self.store.index["experiments"].pop(e["ID"], None)
        for res in e["resources"].values():
            self._remove_tree(res)
        for sc in e["scans"].values():
            for res in sc["resources"].values():
                self._remove_tree(res)

    def _remove_tree(self, res: Json) -> None:
        shutil.rmtree(self.store.resource_dir(res), ignore_errors=True)


def _must(owner: tuple[str, Json] | None) -> tuple[str, Json]:
    if owner is None:
        raise HTTPError(404, "Not Found", "owner")
    return owner


def _check_label(label: str) -> str:
    """Labels and IDs are plain: letters, digits, ``_``, ``-`` and ``.`` (as XNAT allows)."""
    ok = label and all(c.isalnum() or c in "_-." for c in label) and label not in (".", "..")
    if not ok:
        raise HTTPError(400, "Bad Request", f"invalid label {label!r}")
    return label


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in text)


def _guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Log, rather than crash on, a file vanishing in the middle of a zip download."""
    try:
        yield from chunks
    except OSError:
        log.exception("zip download interrupted")
        raise


def listings_level_elements() -> listings.Level:
    """The listing level of ``/data/search/elements``."""
    return listings.Level(
        "Elements",
        ("ELEMENT_NAME", "SINGULAR", "PLURAL", "CATEGORY", "SECURED", "BROWSEABLE", "COUNT"),
    )


def listings_level_fields() -> listings.Level:
    """The listing level of ``/data/search/elements/{element}``."""
    return listings.Level(
        "Fields",
        ("FIELD_ID", "HEADER", "SUMMARY", "TYPE", "REQUIRES_VALUE", "DESC", "ELEMENT_NAME", "SRC"),
    )


def build_app(store: Store) -> Starlette:
    """The ASGI application over ``store``; its :class:`DevXnat` is at ``app.state.devxnat``."""
    dev = DevXnat(store)
    app = dev.app()
    app.state.devxnat = dev
    return app
