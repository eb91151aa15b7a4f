"""XNAT's data-type hierarchy, as listings and searches apply it.

A listing filtered with ``xsiType=xnat:subjectAssessorData`` or ``xnat:imageSessionData``
answers MR, PET and CT sessions alike (pyxnat's ``array.experiments`` relies on it; its
live-server test expects a subject's MR and PET sessions from one such call). The parent links
are those of XNAT's ``xnat.xsd`` for the types devxnat can hold or be asked about.
"""

from __future__ import annotations

_PARENT = {
    "xnat:subjectassessordata": "xnat:experimentdata",
    "xnat:deriveddata": "xnat:experimentdata",
    "xnat:imagesessiondata": "xnat:subjectassessordata",
    "xnat:imageassessordata": "xnat:deriveddata",
    "xnat:qcassessmentdata": "xnat:imageassessordata",
    "xnat:mrsessiondata": "xnat:imagesessiondata",
    "xnat:petsessiondata": "xnat:imagesessiondata",
    "xnat:ctsessiondata": "xnat:imagesessiondata",
    "xnat:petmrsessiondata": "xnat:petsessiondata",
    "xnat:mrscandata": "xnat:imagescandata",
    "xnat:petscandata": "xnat:imagescandata",
    "xnat:ctscandata": "xnat:imagescandata",
    "xnat:otherdicomscandata": "xnat:imagescandata",
}


def lineage(xsi_type: str) -> list[str]:
    """``xsi_type`` and every type it extends, lower-cased, nearest first."""
    out = [xsi_type.strip().lower()]
    while out[-1] in _PARENT:
        out.append(_PARENT[out[-1]])
    return out


def is_a(xsi_type: str, wanted: str) -> bool:
    """Whether ``xsi_type`` is ``wanted`` or extends it (names compared without case)."""
    return wanted.strip().lower() in lineage(xsi_type)


def is_scan_type(xsi_type: str) -> bool:
    """Whether ``xsi_type`` names a scan type (``xnat:mrScanData``, ``xnat:imageScanData``)."""
    return "xnat:imagescandata" in lineage(xsi_type)
