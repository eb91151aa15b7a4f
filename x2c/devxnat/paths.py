"""Turning a REST path into the objects it names.

``/data/projects/P/subjects/S/experiments/E/scans/1/resources/NIFTI/files/a/b.nii`` walks
project → subject → experiment → scan → resource → file. The same objects are reachable through
the ``/data/archive`` and ``/REST`` prefixes, and experiments and subjects also directly by ID
(``/data/experiments/E``). While walking, :func:`resolve` builds the route template
(``/data/projects/{project}/subjects/{subject}/...``) that the request counter is keyed by.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote

from x2c.devxnat.store import Json, Store, User, visible

PREFIXES = ("/data/archive", "/data", "/REST")


class NotFound(Exception):
    """Raised when a path names something that does not exist or the user cannot read."""


class UnknownRoute(NotFound):
    """Raised when a path is not one of the routes the server implements (also a 404)."""


@dataclass
class Target:
    """What a path names: a collection (``kind`` ends with ``s``) or one object.

    ``key`` is the last path element of a missing object (what a PUT would create);
    ``file_rel`` the file path inside a resource.
    """

    kind: str
    template: str
    project: Json | None = None
    subject: Json | None = None
    experiment: Json | None = None
    scans: list[Json] = field(default_factory=list)
    scan_selector: str | None = None
    resource: Json | None = None
    key: str | None = None
    file_rel: str | None = None
    found: bool = True
    # ``.../subjects/S/projects/Q`` (kind ``share``): the project Q the subject or experiment
    # is (to be) shared into, or its owner.
    share_project: str | None = None

    @property
    def scan(self) -> Json | None:
        """The one scan named, when the path names exactly one existing scan."""
        if self.scan_selector is not None and len(self.scans) == 1:
            return self.scans[0]
        return None

    def owner_allows_files(self) -> bool:
        """Whether ``files`` may follow: below a resource, scans, or any resource owner."""
        return (
            self.resource is not None or self.scan_selector is not None or self.owner() is not None
        )

    def owner(self) -> tuple[str, Json] | None:
        """The deepest object that can hold resources (scan, experiment, subject, project)."""
        if self.scan is not None:
            return "scan", self.scan
        if self.experiment is not None and self.scan_selector is None:
            return "experiment", self.experiment
        if self.subject is not None and self.experiment is None:
            return "subject", self.subject
        if self.project is not None and self.subject is None and self.experiment is None:
            return "project", self.project
        return None


def strip_prefix(path: str) -> str | None:
    """The path below ``/data``, ``/data/archive`` or ``/REST``, or None if it has none."""
    for prefix in PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return path[len(prefix) :]
    return None


_PLACEHOLDERS = {
    "projects": "{project}",
    "subjects": "{subject}",
    "experiments": "{experiment}",
    "scans": "{scan}",
    "resources": "{resource}",
    "out": "{resource}",
    "in": "{resource}",
}


def template_of(path: str) -> str:
    """The route template of a path, without looking anything up (for requests that fail
    before resolution): ``/data/projects/P/subjects`` gives ``/data/projects/{project}/subjects``;
    paths outside ``/data``, ``/data/archive`` and ``/REST`` are returned as they are."""
    rest = strip_prefix(path)
    if rest is None:
        return path
    segs = [s for s in rest.strip("/").split("/") if s]
    if not segs or segs[0] not in ("projects", "subjects", "experiments"):
        return path
    out = ["/data"]
    i = 0
    while i < len(segs):
        coll = segs[i]
        out.append(coll)
        if coll == "files" and i > 0:
            if i + 1 < len(segs):
                out.append("{path}")
            break
        if i + 1 < len(segs):
            out.append(_PLACEHOLDERS.get(coll, "{id}"))
        i += 2
    return "/".join(out)


def _select_scans(experiment: Json, selector: str) -> list[Json]:
    scans: dict[str, Json] = experiment["scans"]
    if selector.upper() == "ALL":
        return list(scans.values())
    wanted = [s for s in selector.split(",") if s]
    chosen = []
    for sc in scans.values():
        if sc["ID"] in wanted or sc.get("type", "") in wanted:
            chosen.append(sc)
    return chosen


def resolve(store: Store, user: User, rest: str) -> Target:
    """Walk ``rest`` (the path below the prefix) to its :class:`Target`.

    Raises :class:`NotFound` for a missing intermediate object or an unreadable project. A
    missing final object comes back with ``found=False`` and ``key`` set, so PUT can create it.
    """
    segs = [unquote(s) for s in rest.strip("/").split("/") if s != ""]
    if not segs:
        raise UnknownRoute("empty path")
    t = Target(kind="", template="/data")
    i = 0

    def readable(project_id: str) -> None:
        if not user.can_read(project_id):
            raise NotFound(f"project {project_id}")

    while i < len(segs):
        coll = segs[i]
        key = segs[i + 1] if i + 1 < len(segs) else None
        last = i + 2 >= len(segs)
        if coll == "files" and t.owner_allows_files():
            t.template += "/files"
            if key is None:
                t.kind = "files"
            else:
                t.kind = "file"
                t.file_rel = "/".join(segs[i + 1 :])
                t.template += "/{path}"
            return t
        t.template += f"/{coll}"
        if key is None:
            t.kind = coll
            _check_collection(t)
            return t
        if coll == "projects" and t.project is None and t.subject is None and t.experiment is None:
            t.template += "/{project}"
            rec = store.project(key)
            if rec is not None:
                readable(key)
            t.project = rec
            t.kind = "project"
        elif coll == "subjects" and t.experiment is None and t.subject is None:
            t.template += "/{subject}"
            pid = t.project["ID"] if t.project is not None else None
            if t.project is None and i > 0:
                raise NotFound(rest)
            rec = store.subject(key, pid)
            if rec is not None and not visible(user, rec):
                raise NotFound(f"subject {key}")
            t.subject = rec
            t.kind = "subject"
        elif coll == "experiments" and t.experiment is None:
            t.template += "/{experiment}"
            pid = t.project["ID"] if t.project is not None else None
            sid = t.subject["ID"] if t.subject is not None else None
            rec = store.experiment(key, pid, sid)
            if rec is not None and not visible(user, rec):
                raise NotFound(f"experiment {key}")
            t.experiment = rec
            t.kind = "experiment"
        elif coll == "projects" and _parent_kind(t) in ("subject", "experiment") and last:
            shared = _current_record(t)
            if shared is None:
                raise NotFound(rest)
            t.template += "/{project}"
            t.kind = "share"
            t.share_project = key
            t.found = key == shared["project"] or key in shared.get("shares", {})
        elif coll == "scans" and t.experiment is not None and t.scan_selector is None:
            t.template += "/{scan}"
            t.scan_selector = key
            t.scans = _select_scans(t.experiment, key)
            t.kind = "scan"
            if not t.scans and "," not in key and key.upper() != "ALL":
                t.found = False
        elif coll in ("resources", "out", "in") and t.resource is None and t.owner() is not None:
            t.template += "/{resource}"
            owner = t.owner()
            assert owner is not None
            t.resource = find_resource(owner[1], key)
            t.kind = "resource"
        else:
            raise UnknownRoute(rest)
        if t.kind in ("project", "subject", "experiment") and _current(t) is None:
            t.found = False
        if t.kind == "resource" and t.resource is None:
            t.found = False
        if not t.found:
            t.key = key
            if t.kind == "resource" and segs[i + 2 : i + 3] == ["files"]:
                i += 2  # a file PUT creates its missing resource, as XNAT's does
                continue
            if not last:
                raise NotFound(rest)
            return t
        i += 2
    return t


def _current_record(t: Target) -> Json | None:
    """The subject or experiment a ``projects`` (sharing) path hangs below."""
    return t.experiment if t.experiment is not None else t.subject


def _current(t: Target) -> Json | None:
    return {"project": t.project, "subject": t.subject, "experiment": t.experiment}[t.kind]


def _check_collection(t: Target) -> None:
    allowed = {
        "": {"projects", "subjects", "experiments"},
        "project": {"subjects", "experiments", "resources"},
        "subject": {"experiments", "resources", "projects"},
        "experiment": {"scans", "resources", "assessors", "reconstructions", "projects"},
        "scan": {"resources"},
    }
    if t.kind not in allowed.get(_parent_kind(t), set()):
        raise UnknownRoute(t.template)


def _parent_kind(t: Target) -> str:
    if t.resource is not None:
        return "resource"
    if t.scan_selector is not None:
        return "scan"
    if t.experiment is not None:
        return "experiment"
    if t.subject is not None:
        return "subject"
    if t.project is not None:
        return "project"
    return ""


def find_resource(owner: Json, key: str) -> Json | None:
    """The resource of ``owner`` labelled ``key`` (or with that ``xnat_abstractresource_id``)."""
    resources: dict[str, Json] = owner.get("resources", {})
    if key in resources:
        return resources[key]
    for res in resources.values():
        if str(res["xnat_abstractresource_id"]) == key:
            return res
    return None
