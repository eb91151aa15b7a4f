"""Answering writes: creating projects, subjects, experiments, scans and resources, uploading
files (raw body, octet-stream or multipart, optionally unpacked), and deleting."""

from __future__ import annotations

import contextlib
import posixpath
import shutil

import anyio
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from x2c.devxnat.archives import (
    BadArchiveError,
    UnsafeArchiveError,
    clean_relpath,
    is_archive_name,
)
from x2c.devxnat.paths import Target, find_resource
from x2c.devxnat.responses import HTTPError, check_label, field_param, is_true
from x2c.devxnat.store import Json, Store, User, new_resource, now_stamp
from x2c.devxnat.uploads import (
    LayoutError,
    Received,
    commit,
    receive_file,
    receive_stream,
    unpack,
)


class Writer:
    """The PUT, POST and DELETE handlers over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _require_write(self, user: User, project_id: str) -> None:
        if not user.may_write(project_id):
            raise HTTPError(403, "Forbidden", f"user {user.name} cannot write to {project_id}")

    async def write(
        self, request: Request, t: Target, user: User, params: dict[str, str], method: str
    ) -> Response:
        """Answer a PUT or POST: create or update an object, or upload files."""
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
            if t.kind == "share":
                return self._put_share(t, user, params)
        raise HTTPError(405, "Method Not Allowed", f"{method} {t.template}")

    def _put_share(self, t: Target, user: User, params: dict[str, str]) -> Response:
        """Share the subject or experiment into ``t.share_project`` (``?label=`` names it
        there), as XNAT's ``PUT .../subjects/S/projects/Q``; it stays owned by its project."""
        rec = t.experiment if t.experiment is not None else t.subject
        target = t.share_project
        assert rec is not None and target is not None
        if is_true(params.get("primary")):
            raise HTTPError(400, "Bad Request", "primary=true (moving ownership) is not supported")
        if self.store.project(target) is None:
            raise HTTPError(404, "Not Found", f"project {target}")
        self._require_write(user, target)
        if target == rec["project"]:
            raise HTTPError(400, "Bad Request", f"{rec['ID']} is already owned by {target}")
        label = check_label(params.get("label") or rec["label"])
        rec.setdefault("shares", {})[target] = label
        self.store.save()
        return PlainTextResponse(rec["ID"], status_code=200 if t.found else 201)

    def _put_project(self, t: Target, user: User, params: dict[str, str]) -> Response:
        if t.found:
            assert t.project is not None
            self._require_write(user, t.project["ID"])
            return PlainTextResponse(t.project["ID"])
        if not user.admin:
            raise HTTPError(403, "Forbidden", f"user {user.name} cannot create projects")
        assert t.key is not None
        pid = check_label(t.key)
        self.store.index["projects"][pid] = {
            "ID": pid,
            "name": field_param(params, "name") or pid,
            "secondary_ID": field_param(params, "secondary_ID") or pid,
            "description": field_param(params, "description") or "",
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
                t.subject["label"] = check_label(new_label)
                self.store.save()
            return PlainTextResponse(t.subject["ID"])
        assert t.key is not None
        label = check_label(field_param(params, "label") or t.key)
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
            changes = {f: field_param(params, f) for f in ("label", "date", "note", "modality")}
            changes = {f: v for f, v in changes.items() if v is not None}
            if changes.get("label") is not None:
                changes["label"] = check_label(str(changes["label"]))
            if changes:
                t.experiment.update(changes)
                t.experiment["last_modified"] = now_stamp()
                self.store.save()
            return PlainTextResponse(t.experiment["ID"])
        subject = t.subject
        if subject is None:
            ref = field_param(params, "subject_ID") or field_param(params, "subject_label")
            if ref:
                subject = self.store.subject(ref, t.project["ID"])
        if subject is None:
            raise HTTPError(400, "Bad Request", "an experiment needs an existing subject")
        assert t.key is not None
        xsi = params.get("xsiType") or params.get("xsi:type") or "xnat:mrSessionData"
        if not xsi.startswith("xnat:") or not xsi.endswith("SessionData"):
            raise HTTPError(400, "Bad Request", f"unsupported experiment type {xsi}")
        label = check_label(field_param(params, "label") or t.key)
        eid = self.store.next_id("experiment")
        stamp = now_stamp()
        self.store.index["experiments"][eid] = {
            "ID": eid,
            "project": t.project["ID"],
            "subject_ID": subject["ID"],
            "label": label,
            "xsiType": xsi,
            "date": field_param(params, "date") or "",
            "modality": field_param(params, "modality") or xsi[5:-11].upper(),
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
        scan_id = check_label(field_param(params, "ID") or t.scan_selector)
        existing = t.experiment["scans"].get(scan_id)
        if existing is not None:
            for field in ("type", "series_description", "quality", "note"):
                value = field_param(params, field)
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
            "type": field_param(params, "type") or "",
            "series_description": field_param(params, "series_description") or "",
            "quality": field_param(params, "quality") or "usable",
            "note": field_param(params, "note") or "",
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
        label = check_label(t.key)
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
        if t.resource is None and t.key is None:
            raise HTTPError(404, "Not Found", "files are uploaded into a resource: name it")
        with self.store.lock:
            owner = t.owner()
            assert owner is not None
            self._require_write(user, self._project_of(owner))
            if t.key is not None:
                check_label(t.key)
        overwrite = is_true(params.get("overwrite"))
        extract = is_true(params.get("extract"))
        meta = {k: params.get(k, "") for k in ("format", "content", "tags")}
        ctype = request.headers.get("content-type", "")
        pending: list[tuple[str, Received, str]] = []
        files: list[tuple[str, Received]] = []
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
            self._discard([rec for _, rec, _ in pending] + [rec for _, rec in files])
            raise HTTPError(400, "Bad Request", f"upload refused: {exc}") from exc
        except BaseException:
            self._discard([rec for _, rec, _ in pending] + [rec for _, rec in files])
            raise
        resource = t.resource if t.resource is not None else self._make_resource(t, meta)
        try:
            outcome = await anyio.to_thread.run_sync(
                commit, self.store, resource, t.experiment, files, overwrite, meta
            )
        except LayoutError as exc:
            raise HTTPError(409, "Conflict", str(exc)) from exc
        if outcome.duplicates:
            return JSONResponse({"duplicates": outcome.duplicates})
        return PlainTextResponse("", status_code=200)

    def _make_resource(self, t: Target, meta: dict[str, str]) -> Json:
        """The resource a file upload names, created when missing with the upload's format,
        content and tags: XNAT's ``ResourceModifierA.createOrGetResourceCatalog`` (xnat-web)
        creates the catalog of a file PUT whose resource label matches none."""
        assert t.key is not None
        with self.store.lock:
            owner = _must(t.owner())
            existing = find_resource(owner[1], t.key)
            if existing is not None:  # made by a concurrent upload meanwhile
                return existing
            res = new_resource(self.store, t.key, meta["format"], meta["content"])
            res["tags"] = meta["tags"]
            owner[1]["resources"][t.key] = res
            self._touch(t)
            self.store.save()
            return res

    def _discard(self, received: list[Received]) -> None:
        for rec in received:
            with contextlib.suppress(FileNotFoundError):
                rec.path.unlink()

    # -- deleting --------------------------------------------------------------------------

    def delete(self, t: Target, user: User) -> Response:
        """Answer a DELETE of a file, resource, scan, experiment, subject or (admin) project."""
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
            if t.kind == "share":
                return self._unshare(t, user)
            doomed = self._detach(t, user)
            if doomed is None:
                raise HTTPError(405, "Method Not Allowed", f"DELETE {t.template}")
            self._touch(t)
            self.store.save()
            for res in doomed:
                res["deleted"] = True
        # Files go only after the index no longer mentions them: a crash in between leaves
        # unreferenced directories, never references to missing files.
        for res in doomed:
            self._remove_tree(res)
        return PlainTextResponse("")

    def _unshare(self, t: Target, user: User) -> Response:
        rec = t.experiment if t.experiment is not None else t.subject
        target = t.share_project
        assert rec is not None and target is not None
        if target == rec["project"]:
            raise HTTPError(400, "Bad Request", f"{rec['ID']} cannot leave its owning project")
        self._require_write(user, target)
        del rec["shares"][target]
        self.store.save()
        return PlainTextResponse("")

    def _detach(self, t: Target, user: User) -> list[Json] | None:
        """Take a scan, experiment, subject or project out of the index; its resources."""
        index = self.store.index
        if t.kind == "scan" and t.scan is not None:
            assert t.experiment is not None
            self._require_write(user, t.experiment["project"])
            return _resources_of(t.experiment["scans"].pop(t.scan["ID"]))
        if t.kind == "experiment":
            assert t.experiment is not None
            self._require_write(user, t.experiment["project"])
            return _resources_of(index["experiments"].pop(t.experiment["ID"]))
        if t.kind == "subject":
            assert t.subject is not None
            self._require_write(user, t.subject["project"])
            sid = t.subject["ID"]
            doomed = _resources_of(index["subjects"].pop(sid))
            owner = t.subject["project"]
            for e in [e for e in index["experiments"].values() if e["subject_ID"] == sid]:
                if e["project"] == owner:
                    doomed += _resources_of(index["experiments"].pop(e["ID"]))
            return doomed
        if t.kind == "project":
            assert t.project is not None
            if not user.admin:
                raise HTTPError(403, "Forbidden", f"user {user.name} cannot delete projects")
            pid = t.project["ID"]
            doomed = _resources_of(index["projects"].pop(pid))
            # Only what the project owns goes; what was shared into it just stops being shared.
            for kind in ("experiments", "subjects"):
                for rec in list(index[kind].values()):
                    if rec["project"] == pid:
                        doomed += _resources_of(index[kind].pop(rec["ID"]))
                    else:
                        rec.get("shares", {}).pop(pid, None)
            return doomed
        return None

    def _remove_tree(self, res: Json) -> None:
        # An upload still streaming into this resource holds the same dict: the mark makes its
        # commit fail instead of writing into a resource that no longer exists.
        res["deleted"] = True
        shutil.rmtree(self.store.resource_dir(res), ignore_errors=True)


def _resources_of(rec: Json) -> list[Json]:
    """Every resource of a record, its scans' included."""
    found = list(rec.get("resources", {}).values())
    for scan in rec.get("scans", {}).values():
        found.extend(scan["resources"].values())
    return found


def _must(owner: tuple[str, Json] | None) -> tuple[str, Json]:
    if owner is None:
        raise HTTPError(404, "Not Found", "owner")
    return owner
