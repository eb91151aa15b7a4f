"""Choosing a pipeline's inputs on one experiment, given an :class:`~x2c.selection.InputSelection`.

Costs 1 request for the scans, 1 per candidate scan for its resource's files, and 1 per
optional experiment resource. Each chosen file gets a safe path under the job's ``inputs/``:
``scans/{scan id}-{type}/{resource}/{file}`` and ``resources/{label}/{file}``, every segment
reduced to ``[A-Za-z0-9._+-]`` so no label can climb out (``..``, ``/``, ``$()``, quotes).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from urllib.parse import unquote

from x2c.errors import NothingToProcessError, XnatError, XnatNotFoundError
from x2c.selection import InputSelection
from x2c.xnat.catalog import (
    Contents,
    Experiment,
    Scan,
    XnatFile,
    experiment_contents,
    list_resource_files,
)
from x2c.xnat.session import XnatSession
from x2c.xnat.stream import XnatFileRef

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_segment(text: str) -> str:
    """``text`` as one harmless path segment: runs of other characters become ``_``, and a
    leading ``.`` or ``-`` is prefixed with ``_`` (no ``..``, no hidden files, no options)."""
    cleaned = _UNSAFE.sub("_", text).strip("_") or "_"
    if cleaned[0] in ".-":
        cleaned = "_" + cleaned
    return cleaned


def safe_relpath(path: str) -> str:
    """A relative path whose every segment went through :func:`safe_segment`."""
    return "/".join(safe_segment(part) for part in path.split("/") if part not in ("", "."))


@dataclass(frozen=True)
class SelectedInputs:
    """What :func:`select_inputs` chose on one experiment: the ``scans`` taken, the optional
    experiment ``resources`` found, and the ``files`` to stage (paths relative to ``inputs/``)."""

    experiment_id: str
    scans: tuple[Scan, ...]
    resources: tuple[str, ...]
    files: tuple[XnatFileRef, ...]

    @property
    def total_size(self) -> int:
        """Bytes to stage."""
        return sum(max(f.size, 0) for f in self.files)


def _matches(scan: Scan, selection: InputSelection) -> bool:
    kind = scan.type.lower()
    return any(fnmatch.fnmatchcase(kind, pattern.lower()) for pattern in selection.scan_types)


def _quality_ok(scan: Scan, selection: InputSelection) -> bool:
    if not selection.quality:
        return True
    return scan.quality.lower() in {q.lower() for q in selection.quality}


def select_inputs(
    session: XnatSession,
    experiment: Experiment | str,
    selection: InputSelection,
    contents: Contents | None = None,
) -> SelectedInputs:
    """The files of ``experiment`` that ``selection`` asks for: the experiment's document (1
    request, none when the caller read its ``contents`` already), then one file listing per
    scan tried and per experiment resource the selection names that exists.

    Raises :class:`NothingToProcessError` with the reason when no scan qualifies (no type
    match, wrong quality, no or empty resource), and :class:`XnatNotFoundError` when the
    experiment itself does not exist or cannot be read.
    """
    experiment_id = experiment if isinstance(experiment, str) else experiment.id
    session_name = (
        f"session {experiment_id}"
        if isinstance(experiment, str)
        else f"session {experiment.label} ({experiment.id})"
    )
    patterns = ", ".join(selection.scan_types)
    if contents is None or contents.experiment_id != experiment_id:
        contents = experiment_contents(session, experiment_id)
    scans = contents.scans
    if not scans:
        raise NothingToProcessError(f"{session_name} has no scans")
    typed = [s for s in scans if _matches(s, selection)]
    if not typed:
        present = ", ".join(sorted({s.type for s in scans})) or "none"
        raise NothingToProcessError(
            f"no scan of type {patterns} in {session_name} (types present: {present})"
        )
    candidates = [s for s in typed if _quality_ok(s, selection)]
    if not candidates:
        found = ", ".join(f"{s.id} ({s.quality or 'no quality'})" for s in typed)
        raise NothingToProcessError(
            f"no scan of type {patterns} with quality {', '.join(selection.quality)} in "
            f"{session_name} (found: {found})"
        )
    if selection.pick == "last":
        candidates.reverse()

    chosen: list[tuple[Scan, list[XnatFile]]] = []
    for scan in candidates:
        try:
            files = list_resource_files(session, experiment_id, selection.resource, scan_id=scan.id)
        except XnatNotFoundError:
            continue
        if not files:
            continue
        chosen.append((scan, files))
        if selection.pick != "all":
            break
    if not chosen:
        raise NothingToProcessError(
            f"no scan of type {patterns} has a non-empty {selection.resource} resource in "
            f"{session_name}"
        )

    refs: list[XnatFileRef] = []
    for scan, files in chosen:
        base = f"scans/{safe_segment(f'{scan.id}-{scan.type}')}/{safe_segment(selection.resource)}"
        refs += [_ref(base, f) for f in files]
    found_resources: list[str] = []
    for label in selection.experiment_resources:
        if label not in contents.resources:
            continue
        try:
            files = list_resource_files(session, experiment_id, label)
        except XnatNotFoundError:
            continue
        found_resources.append(label)
        refs += [_ref(f"resources/{safe_segment(label)}", f) for f in files]

    seen: dict[str, str] = {}
    for ref in refs:
        if ref.path in seen:
            raise XnatError(
                f"{session_name}: files {seen[ref.path]!r} and {ref.source_path!r} would both be "
                f"staged as inputs/{ref.path}; rename one on XNAT"
            )
        seen[ref.path] = ref.source_path
    return SelectedInputs(
        experiment_id=experiment_id,
        scans=tuple(scan for scan, _ in chosen),
        resources=tuple(found_resources),
        files=tuple(refs),
    )


def _ref(base: str, f: XnatFile) -> XnatFileRef:
    return XnatFileRef(
        path=f"{base}/{safe_relpath(f.path)}",
        size=f.size,
        md5=f.digest,
        uri=f.uri,
        source_path=unquote(f.uri),
    )
