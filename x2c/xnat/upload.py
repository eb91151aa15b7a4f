"""Putting a result on an experiment as a resource, verified, with its provenance written last.

The order makes the resource its own completion record: data files first (the first one creates
the resource, as XNAT's file upload does), then a listing that must show every name, size and
md5 as sent, then ``provenance.json`` (the caller's record plus an ``x2c_resource`` section with
the version and the file digests, the md5s as sent), then a second listing. A resource without
``provenance.json`` is therefore an incomplete upload, and :func:`resource_status` answers "is
this experiment done for pipeline P version V" from it: it compares what XNAT lists with the
md5s the provenance records, so a reader never takes a damaged upload for a result.

That comparison is also why ``verify=False`` is safe: the two listings are left out and the
caller verifies later with one :func:`resource_status` (x2c's passes do it in the next pass,
with the listing that also settles the ledger).

Costs: ``N + 3`` requests for N files (``N + 1`` with ``verify=False``; one more for
``on_exists="replace"`` or ``"overwrite"``); :func:`resource_status` costs 1 when the
provenance's mark tells, 2 when the provenance must be read.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import tarfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from x2c.errors import IntegrityError, XnatConflictError, XnatError, XnatNotFoundError
from x2c.sources import ByteSource, FileRef
from x2c.xnat.catalog import XnatFile, list_resource_files
from x2c.xnat.session import XnatSession, path_of

PROVENANCE_NAME = "provenance.json"
_PROVENANCE_KEY = "x2c_resource"
_MAX_PROVENANCE_BYTES = 16 << 20

OnExists = Literal["fail", "replace", "overwrite"]


@dataclass(frozen=True)
class UploadedFile:
    """One file of a verified upload: path in the resource, size and md5 as XNAT lists them."""

    path: str
    size: int
    md5: str


@dataclass(frozen=True)
class UploadReceipt:
    """Proof of a verified upload: the resource ``uri`` (full URL), its data ``files`` and the
    ``provenance`` file, each as listed back by XNAT."""

    experiment_id: str
    resource: str
    uri: str
    version: str
    files: tuple[UploadedFile, ...]
    provenance: UploadedFile


class LocalFileSource:
    """A :class:`~x2c.sources.ByteSource` for files under a local ``root`` directory; the
    ``FileRef.path`` is relative to it."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the bytes of ``root / ref.path`` in chunks of at most ``chunk_size``."""
        with (self._root / ref.path).open("rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk


def local_refs(directory: Path) -> list[FileRef]:
    """Every regular file under ``directory`` as a :class:`FileRef` (md5 None: computed while
    uploading), in path order; symbolic links are refused so nothing outside is sent."""
    refs: list[FileRef] = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file():
                raise XnatError(f"refusing to upload {full}: not a regular file")
            refs.append(FileRef(full.relative_to(directory).as_posix(), full.stat().st_size, None))
    return refs


class _Hashing:
    """Wraps a ByteSource stream, counting and hashing what went out."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.size = 0
        self.md5 = hashlib.md5(usedforsecurity=False)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            self.md5.update(chunk)
            yield chunk


def _resource_path(experiment_id: str, label: str, *rest: str) -> str:
    return path_of("data", "experiments", experiment_id, "resources", label, *rest)


def _check_name(path: str) -> list[str]:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise XnatError(f"refusing to upload {path!r}: want a plain relative path")
    return parts


def upload_files(
    session: XnatSession,
    experiment_id: str,
    label: str,
    files: Iterable[tuple[FileRef, ByteSource]],
    *,
    provenance: Mapping[str, Any],
    version: str,
    on_exists: OnExists = "fail",
    verify: bool = True,
) -> UploadReceipt:
    """Upload ``files`` (each streamed from its ByteSource, memory flat) as resource ``label``
    of ``experiment_id``, verify them by listing them back, then write ``provenance.json``.

    ``on_exists``: ``"fail"`` raises :class:`XnatConflictError` when a file of the same name
    is already there (XNAT keeps it and answers it as a duplicate), ``"replace"`` deletes the
    resource first, ``"overwrite"`` keeps it and overwrites same-named files (its old
    provenance is removed first, so the resource reads "incomplete" meanwhile). Raises
    :class:`IntegrityError` naming the first file XNAT lists differently from what was sent (or
    from the md5 its FileRef claims). ``verify=False`` leaves the listings out (see the module
    docstring); the receipt then carries the files as sent.
    """
    where = f"resource {label!r} of experiment {experiment_id!r}"
    items = list(files)
    names = [ref.path for ref, _ in items]
    _check_names(names, where)
    resource = _prepare(session, experiment_id, label, on_exists)
    overwrite = on_exists != "fail"
    sent: dict[str, UploadedFile] = {}
    for ref, source in items:
        sent[ref.path] = _put_file(
            session, resource, ref.path.split("/"), ref, source, where, overwrite=overwrite
        )
    return _finish(
        session, experiment_id, label, sent, provenance, version, verify=verify, overwrite=overwrite
    )


def _check_names(names: Iterable[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        _check_name(name)
        if name == PROVENANCE_NAME:
            raise XnatConflictError(f"{where}: a result file may not be named {PROVENANCE_NAME}")
        if name in seen:
            raise XnatConflictError(f"{where}: {name!r} is given twice")
        seen.add(name)


def _prepare(session: XnatSession, experiment_id: str, label: str, on_exists: OnExists) -> str:
    """Clear the resource as ``on_exists`` asks (the first file upload creates it when
    missing); returns its path."""
    where = f"resource {label!r} of experiment {experiment_id!r}"
    resource = _resource_path(experiment_id, label)
    if on_exists == "replace":
        session.request(
            "DELETE",
            resource,
            what=f"delete {where}",
            params={"removeFiles": "true"},
            accept=(200, 202, 204, 404),
        )
    if on_exists == "overwrite":
        session.request(
            "DELETE",
            _resource_path(experiment_id, label, "files", PROVENANCE_NAME),
            what=f"remove the old provenance of {where}",
            accept=(200, 202, 204, 404),
        )
    return resource


def _finish(
    session: XnatSession,
    experiment_id: str,
    label: str,
    sent: Mapping[str, UploadedFile],
    provenance: Mapping[str, Any],
    version: str,
    *,
    verify: bool,
    overwrite: bool,
) -> UploadReceipt:
    """List the data files back and compare (``verify``), then write ``provenance.json`` and
    verify it the same way."""
    where = f"resource {label!r} of experiment {experiment_id!r}"
    resource = _resource_path(experiment_id, label)
    url = session.url + resource
    if verify:
        listed = _listed(session, experiment_id, label)
        receipts = tuple(_verify(sent[p], listed, where, url) for p in sorted(sent))
    else:
        receipts = tuple(sent[p] for p in sorted(sent))

    document = dict(provenance)
    document[_PROVENANCE_KEY] = {
        "label": label,
        "version": version,
        "files": [{"path": f.path, "size": f.size, "md5": f.md5} for f in receipts],
    }
    blob = json.dumps(document, indent=2, sort_keys=True, default=str).encode("utf-8")
    prov_ref = FileRef(
        PROVENANCE_NAME, len(blob), hashlib.md5(blob, usedforsecurity=False).hexdigest()
    )
    mark = provenance_mark(version, receipts)
    sent_prov = _put_file(
        session,
        resource,
        [PROVENANCE_NAME],
        prov_ref,
        _BytesSource(blob),
        where,
        content=mark,
        overwrite=overwrite,
    )
    prov_receipt = sent_prov
    if verify:
        prov_receipt = _verify(sent_prov, _listed(session, experiment_id, label), where, url)
    return UploadReceipt(
        experiment_id=experiment_id,
        resource=label,
        uri=url,
        version=version,
        files=receipts,
        provenance=prov_receipt,
    )


class _BytesSource:
    def __init__(self, blob: bytes) -> None:
        self._blob = blob

    def iter_bytes(self, ref: FileRef, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        for start in range(0, len(self._blob), chunk_size):
            yield self._blob[start : start + chunk_size]


def _put_file(
    session: XnatSession,
    resource: str,
    parts: list[str],
    ref: FileRef,
    source: ByteSource,
    where: str,
    extract: bool = False,
    content: str = "",
    overwrite: bool = True,
) -> UploadedFile:
    streams: list[_Hashing] = []

    def body() -> Iterable[bytes]:
        streams.append(_Hashing(source.iter_bytes(ref)))
        return streams[-1]

    response = session.request(
        "PUT",
        resource + path_of("files", *parts),
        what=f"upload {ref.path} to {where}",
        params={
            "inbody": "true",
            **({"overwrite": "true"} if overwrite else {}),
            **({"extract": "true"} if extract else {}),
            **({"content": content} if content else {}),
        },
        body=body,
        headers={"Content-Type": "application/octet-stream"},
        accept=(200, 201),
    )
    url = session.url + resource
    if not overwrite and _duplicates(response.text):
        raise XnatConflictError(
            f"{where} already holds {ref.path} (XNAT kept it and reported it as a duplicate): "
            "check resource_status(), then upload with on_exists='replace' to re-create it or "
            "'overwrite' to keep it",
            url=url,
            status=response.status_code,
        )
    stream = streams[-1]
    md5 = stream.md5.hexdigest()
    if ref.md5 is not None and md5 != ref.md5.lower():
        raise IntegrityError(
            f"{ref.path}: sent md5 {md5} differs from the {ref.md5} its source claims while "
            f"uploading to {url}: the source file changed; retry the upload",
            name=ref.path,
            expected=ref.md5,
            actual=md5,
            url=url,
        )
    if ref.size >= 0 and stream.size != ref.size:
        raise IntegrityError(
            f"{ref.path}: sent {stream.size} bytes, its source claims {ref.size}, uploading to "
            f"{url}: the source file changed; retry the upload",
            name=ref.path,
            expected=str(ref.size),
            actual=str(stream.size),
            url=url,
        )
    return UploadedFile(ref.path, stream.size, md5)


def _duplicates(text: str) -> list[str]:
    """The names a file upload without ``overwrite`` left alone: XNAT answers 200 with
    ``{"duplicates": [...]}`` (as text/html) instead of storing them (xnat-web's FileList)."""
    if not text.lstrip().startswith("{"):
        return []
    try:
        found = json.loads(text).get("duplicates", [])
    except (ValueError, AttributeError):
        return []
    return [str(name) for name in found] if isinstance(found, list) else []


def _listed(session: XnatSession, experiment_id: str, label: str) -> dict[str, XnatFile]:
    return {f.path: f for f in list_resource_files(session, experiment_id, label)}


def _verify(
    sent: UploadedFile, listed: Mapping[str, XnatFile], where: str, url: str
) -> UploadedFile:
    found = listed.get(sent.path)
    if found is None:
        raise IntegrityError(
            f"{sent.path}: uploaded to {where} but XNAT does not list it: retry the upload "
            "with on_exists='replace'",
            name=sent.path,
            expected="present",
            actual="missing",
            url=url,
        )
    if found.size != sent.size:
        raise IntegrityError(
            f"{sent.path}: XNAT lists {found.size} bytes in {where}, {sent.size} were sent: "
            "retry the upload with on_exists='replace'",
            name=sent.path,
            expected=str(sent.size),
            actual=str(found.size),
            url=url,
        )
    if found.digest is None or found.digest != sent.md5:
        raise IntegrityError(
            f"{sent.path}: XNAT lists md5 {found.digest or '(none)'} in {where}, {sent.md5} "
            "was sent: retry the upload with on_exists='replace' (an empty md5 means the "
            "server keeps no checksums: enable them in XNAT's site settings)",
            name=sent.path,
            expected=sent.md5,
            actual=found.digest or "",
            url=url,
        )
    return sent


def upload_directory(
    session: XnatSession,
    experiment_id: str,
    label: str,
    directory: Path,
    *,
    provenance: Mapping[str, Any],
    version: str,
    on_exists: OnExists = "fail",
) -> UploadReceipt:
    """Upload every file under ``directory`` (paths kept) as resource ``label``; see
    :func:`upload_files`."""
    source = LocalFileSource(directory)
    return upload_files(
        session,
        experiment_id,
        label,
        [(ref, source) for ref in local_refs(directory)],
        provenance=provenance,
        version=version,
        on_exists=on_exists,
    )


def upload_archive(
    session: XnatSession,
    experiment_id: str,
    label: str,
    archive: Path,
    *,
    provenance: Mapping[str, Any],
    version: str,
    on_exists: OnExists = "fail",
    extract: bool = False,
) -> UploadReceipt:
    """Upload an archive (e.g. the job's results zip) as resource ``label``; see
    :func:`upload_files`.

    By default the archive is stored as one file under its own name. With ``extract=True``
    (``.zip`` and ``.tar[.gz|.bz2|.xz]``) XNAT unpacks it into the resource, and each member is
    verified against an md5 computed locally by streaming through the archive; members that
    are not regular files, or whose names are absolute or climb with ``..``, are refused before
    anything is sent.
    """
    where = f"resource {label!r} of experiment {experiment_id!r}"
    ref = FileRef(archive.name, archive.stat().st_size, None)
    if not extract:
        return upload_files(
            session,
            experiment_id,
            label,
            [(ref, LocalFileSource(archive.parent))],
            provenance=provenance,
            version=version,
            on_exists=on_exists,
        )
    members = archive_manifest(archive)
    _check_names(members, f"{where} (members of {archive.name})")
    resource = _prepare(session, experiment_id, label, on_exists)
    overwrite = on_exists != "fail"
    source = LocalFileSource(archive.parent)
    _put_file(
        session, resource, [archive.name], ref, source, where, extract=True, overwrite=overwrite
    )
    return _finish(
        session,
        experiment_id,
        label,
        members,
        provenance,
        version,
        verify=True,
        overwrite=overwrite,
    )


def archive_manifest(archive: Path) -> dict[str, UploadedFile]:
    """Each regular file in a zip or tar ``archive`` with its size and md5, streamed (memory
    flat). Raises :class:`XnatError` for an unreadable archive or a non-regular member."""
    out: dict[str, UploadedFile] = {}

    def add(name: str, size: int, handle: IO[bytes]) -> None:
        digest = hashlib.md5(usedforsecurity=False)
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
        clean = name.removeprefix("./")
        out[clean] = UploadedFile(clean, size, digest.hexdigest())

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    with zf.open(info) as handle:
                        add(info.filename, info.file_size, handle)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tf:
                    if member.isdir():
                        continue
                    extracted = tf.extractfile(member) if member.isfile() else None
                    if extracted is None:
                        raise XnatError(
                            f"refusing to upload {archive}: member {member.name!r} is not a "
                            "regular file (link or device)"
                        )
                    with extracted:
                        add(member.name, member.size, extracted)
        else:
            raise XnatError(f"cannot extract {archive}: it is neither a zip nor a tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise XnatError(f"cannot read archive {archive}: {exc}") from exc
    return out


class ResourceState(enum.Enum):
    """Where a result resource stands; only ``DONE`` means nothing is left to do."""

    MISSING = "missing"
    INCOMPLETE = "incomplete"
    OUTDATED = "outdated"
    DAMAGED = "damaged"
    DONE = "done"


@dataclass(frozen=True)
class ResourceStatus:
    """The answer of :func:`resource_status`: the ``state``, a one-line ``reason``, and the
    provenance record when one could be read."""

    state: ResourceState
    reason: str
    provenance: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def done(self) -> bool:
        """True when the resource holds a complete, verified result of the asked version."""
        return self.state is ResourceState.DONE


_MARK = "x2c-provenance"


def provenance_mark(version: str, files: Iterable[UploadedFile]) -> str:
    """The ``content`` attribute x2c gives its ``provenance.json``: the pipeline version and a
    digest of every data file (path, size, md5) the provenance records, so that one listing
    tells whether the resource is a complete result of a version."""
    text = "\n".join(f"{f.path}\t{f.size}\t{f.md5}" for f in sorted(files, key=lambda f: f.path))
    return f"{_MARK}:{hashlib.sha256(text.encode()).hexdigest()[:32]}:{version}"


def _marked(listed: Mapping[str, XnatFile], where: str, version: str) -> ResourceStatus | None:
    """The status one listing proves through the provenance's mark: DONE when the mark names
    ``version`` and the listed data files match its digest, OUTDATED when it names another
    version; None (read the provenance) for anything else."""
    prov = listed[PROVENANCE_NAME]
    name, _, rest = prov.content.partition(":")
    recorded = rest.partition(":")[2]
    if name != _MARK or not recorded:
        return None
    if recorded != version:
        return ResourceStatus(
            ResourceState.OUTDATED, f"{where} holds version {recorded}, not {version}"
        )
    data = [
        UploadedFile(f.path, f.size, f.digest or "")
        for p, f in listed.items()
        if p != PROVENANCE_NAME
    ]
    if provenance_mark(version, data) != prov.content:
        return None  # the full read names what differs
    return ResourceStatus(ResourceState.DONE, f"{where} holds version {version}")


def resource_status(
    session: XnatSession, experiment_id: str, label: str, version: str, *, read: bool = True
) -> ResourceStatus:
    """Whether resource ``label`` of ``experiment_id`` holds a complete result of pipeline
    ``version``: its provenance names that version, and every file it lists is present with
    the same size and md5. Costs 2 requests (1 when the resource or its provenance is absent,
    and with ``read=False`` when the provenance's mark (:func:`provenance_mark`) already tells:
    then the status carries no provenance document). Raises :class:`XnatNotFoundError` only
    when the experiment itself cannot be read."""
    where = f"resource {label} of {experiment_id}"
    try:
        listed = _listed(session, experiment_id, label)
    except XnatNotFoundError:
        return ResourceStatus(ResourceState.MISSING, f"{where} does not exist")
    prov = listed.get(PROVENANCE_NAME)
    if prov is None:
        return ResourceStatus(
            ResourceState.INCOMPLETE, f"{where} has no {PROVENANCE_NAME}: an unfinished upload"
        )
    marked = None if read else _marked(listed, where, version)
    if marked is not None:
        return marked
    response = session.request("GET", prov.uri, what=f"read the provenance of {where}", stream=True)
    try:
        raw = response.raw.read(_MAX_PROVENANCE_BYTES + 1, decode_content=True)
    finally:
        response.close()
    if len(raw) > _MAX_PROVENANCE_BYTES:
        return ResourceStatus(
            ResourceState.DAMAGED, f"{where}: {PROVENANCE_NAME} is larger than 16 MiB"
        )
    if hashlib.md5(raw, usedforsecurity=False).hexdigest() != prov.digest:
        return ResourceStatus(
            ResourceState.DAMAGED, f"{where}: {PROVENANCE_NAME} does not match its listed md5"
        )
    try:
        document = json.loads(raw)
        section = document[_PROVENANCE_KEY]
        recorded = str(section["version"])
        expected = {str(f["path"]): (int(f["size"]), str(f["md5"])) for f in section["files"]}
    except (ValueError, KeyError, TypeError) as exc:
        return ResourceStatus(
            ResourceState.DAMAGED, f"{where}: {PROVENANCE_NAME} is unreadable ({exc!r})"
        )
    if recorded != version:
        return ResourceStatus(
            ResourceState.OUTDATED,
            f"{where} holds version {recorded}, not {version}",
            provenance=document,
        )
    for path, (size, md5) in sorted(expected.items()):
        found = listed.get(path)
        if found is None:
            return ResourceStatus(
                ResourceState.DAMAGED, f"{where}: {path} is missing", provenance=document
            )
        if found.size != size or found.digest != md5:
            return ResourceStatus(
                ResourceState.DAMAGED,
                f"{where}: {path} is listed with size {found.size} md5 {found.digest}, "
                f"provenance says {size} {md5}",
                provenance=document,
            )
    return ResourceStatus(ResourceState.DONE, f"{where} holds version {version}", document)


def is_done(session: XnatSession, experiment_id: str, label: str, version: str) -> bool:
    """Shorthand for ``resource_status(...).done``."""
    return resource_status(session, experiment_id, label, version).done
