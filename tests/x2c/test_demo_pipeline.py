"""The demo pipeline's computation, on a volume whose answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from x2c.demo_pipeline import brain_stats, main


def test_brain_stats_on_a_cube() -> None:
    data = np.zeros((10, 10, 10))
    data[2:6, 2:6, 2:6] = 50.0
    mask, stats = brain_stats(data, (2.0, 2.0, 2.0), 0.2)
    assert mask.sum() == 64 and stats["mask_voxels"] == 64
    assert stats["voxel_volume_mm3"] == 8.0
    assert stats["mask_volume_ml"] == pytest.approx(0.512)
    assert stats["mean_in_mask"] == 50.0


def test_main_writes_mask_and_stats(tmp_path: Path) -> None:
    data = np.zeros((8, 8, 8), np.float32)
    data[:4] = 10.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "in.nii.gz"))
    assert main([str(tmp_path / "in.nii.gz"), str(tmp_path / "out"), "--label=a b"]) == 0
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["label"] == "a b" and stats["mask_voxels"] == 256
    mask = np.asarray(nib.load(str(tmp_path / "out" / "mask.nii.gz")).dataobj)
    assert mask.dtype == np.uint8 and int(mask.sum()) == 256
