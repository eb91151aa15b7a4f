"""The demo data: real, small, deterministic NIfTI volumes with something for a mask to find."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import requests

from tests.fixtures.xnat_server import XnatServer
from x2c.devxnat.demo import nifti_bytes


def test_demo_volume_is_a_real_nifti_with_a_bright_blob(xnat_server: XnatServer) -> None:
    url = f"{xnat_server.url}/data/experiments/X2C_E00002/scans/1/resources/NIFTI/files/T1.nii"
    data = requests.get(url, auth=(xnat_server.user, xnat_server.password), timeout=10).content
    img = nib.Nifti1Image.from_bytes(data)
    volume = np.asarray(img.dataobj)
    assert volume.shape == (32, 32, 32)
    assert volume.dtype == np.int16
    mask = volume > 500
    assert 1000 < int(mask.sum()) < 10000  # an ellipsoid of a few thousand voxels
    assert volume[mask].mean() > 5 * volume[~mask].mean()


def test_demo_volumes_are_deterministic_and_differ_per_subject() -> None:
    assert nifti_bytes(1) == nifti_bytes(1)
    assert hashlib.md5(nifti_bytes(1)).digest() != hashlib.md5(nifti_bytes(2)).digest()
