"""Demo data: one project of MR sessions with small, real NIfTI volumes (``--demo-data N``).

Project ``DEMO``; subject ``k`` (1-based) is labelled ``DEMO_S{k:03d}`` and has one MR session
labelled ``DEMO_S{k:03d}_MR1`` with scan ``1`` of type ``T1`` holding two resources: ``NIFTI``
(``T1.nii``, a 32x32x32 int16 volume with a bright ellipsoid, different but deterministic per
subject) and ``DICOM`` (three small placeholder slice files ``1-001.dcm`` ...).
"""

from __future__ import annotations

import io
import logging

import numpy as np

from x2c.devxnat.store import Json, Store, new_resource, now_stamp
from x2c.devxnat.uploads import Received, commit, md5_of

log = logging.getLogger(__name__)

DEMO_PROJECT = "DEMO"
SHAPE = (32, 32, 32)


def nifti_bytes(index: int) -> bytes:
    """A small, uncompressed NIfTI-1 volume for subject ``index`` (same bytes every time)."""
    import nibabel as nib

    rng = np.random.default_rng(1000 + index)
    grid = np.indices(SHAPE).astype(np.float64)
    centre = np.array([16.0, 16.0, 16.0]) + rng.uniform(-3, 3, size=3)
    radii = np.array([9.0, 11.0, 8.0]) + rng.uniform(-1, 1, size=3)
    dist = sum(((grid[i] - centre[i]) / radii[i]) ** 2 for i in range(3))
    data = (rng.normal(100, 10, size=SHAPE) + 900 * (dist <= 1.0)).astype(np.int16)
    img = nib.Nifti1Image(data, affine=np.diag([1.0, 1.0, 1.0, 1.0]))  # type: ignore[no-untyped-call]
    img.header.set_xyzt_units("mm", "sec")  # type: ignore[no-untyped-call]
    return bytes(img.to_bytes())


def _dicom_like(index: int, slice_no: int) -> bytes:
    # A 128-byte preamble and the DICM magic, then a text payload: enough to look like DICOM to
    # tools that only sniff the magic; not a valid data set.
    return b"\0" * 128 + b"DICM" + f"x2c demo subject {index} slice {slice_no}\n".encode()


def _add_file(store: Store, res: Json, rel: str, data: bytes, fmt: str) -> None:
    path = store.temp_path()
    path.write_bytes(data)
    received = Received(path, len(data), md5_of(path))
    commit(store, res, None, [(rel, received)], True, {"format": fmt}, save=False)


def create_demo(store: Store, subjects: int) -> None:
    """Create project ``DEMO`` with ``subjects`` subjects unless it exists already."""
    with store.lock:
        if store.project(DEMO_PROJECT) is not None:
            log.info("demo project %s exists; leaving it as it is", DEMO_PROJECT)
            return
        stamp = now_stamp()
        store.index["projects"][DEMO_PROJECT] = {
            "ID": DEMO_PROJECT,
            "name": "x2c demo project",
            "secondary_ID": DEMO_PROJECT,
            "description": "Synthetic MR sessions for the x2c demo and tests",
            "pi_firstname": "",
            "pi_lastname": "",
            "insert_date": stamp,
            "resources": {},
        }
        for k in range(1, subjects + 1):
            sid = store.next_id("subject")
            label = f"{DEMO_PROJECT}_S{k:03d}"
            store.index["subjects"][sid] = {
                "ID": sid,
                "project": DEMO_PROJECT,
                "label": label,
                "insert_date": stamp,
                "insert_user": store.admin_name,
                "resources": {},
            }
            eid = store.next_id("experiment")
            nifti = new_resource(store, "NIFTI", "NIFTI", "T1_RAW")
            dicom = new_resource(store, "DICOM", "DICOM", "RAW")
            store.index["experiments"][eid] = {
                "ID": eid,
                "project": DEMO_PROJECT,
                "subject_ID": sid,
                "label": f"{label}_MR1",
                "xsiType": "xnat:mrSessionData",
                "date": f"2024-01-{k % 28 + 1:02d}",
                "modality": "MR",
                "insert_date": stamp,
                "insert_user": store.admin_name,
                "last_modified": stamp,
                "scans": {
                    "1": {
                        "ID": "1",
                        "xnat_imagescandata_id": int(store.next_id("scan")),
                        "xsiType": "xnat:mrScanData",
                        "type": "T1",
                        "series_description": "T1 MPRAGE (synthetic)",
                        "quality": "usable",
                        "note": "",
                        "resources": {"NIFTI": nifti, "DICOM": dicom},
                    }
                },
                "resources": {},
            }
            _add_file(store, nifti, "T1.nii", nifti_bytes(k), "NIFTI")
            buf = io.BytesIO()
            for n in range(1, 4):
                buf.seek(0)
                buf.truncate()
                buf.write(_dicom_like(k, n))
                _add_file(store, dicom, f"1-{n:03d}.dcm", buf.getvalue(), "DICOM")
        store.save()
    store.sync()
    log.info("created demo project %s with %d subjects", DEMO_PROJECT, subjects)
