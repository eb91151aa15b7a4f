"""The demo pipeline: a brain mask and volume statistics from one NIfTI image.

Small enough to run anywhere (bare with the project's python, or in the ``x2c-demo`` podman
image), real enough to exercise a whole job: it reads the image with nibabel, thresholds it at
a fraction of its robust maximum, and writes ``mask.nii.gz`` and ``stats.json`` to OUTDIR::

    python -m x2c.demo_pipeline IN OUTDIR [--label LABEL] [--fraction 0.2]

It imports only the standard library, numpy and nibabel, so it can be copied into an image
without the rest of x2c.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import nibabel as nib
import numpy as np


def brain_stats(data: Any, zooms: tuple[float, ...], fraction: float) -> tuple[Any, dict[str, Any]]:
    """The mask (voxels above ``fraction`` of the 99th percentile) and its statistics."""
    values = np.asarray(data, dtype=np.float64)
    robust_max = float(np.percentile(values, 99)) if values.size else 0.0
    threshold = fraction * robust_max
    mask = values > threshold
    voxel_mm3 = float(np.prod(zooms[:3])) if zooms else 1.0
    count = int(mask.sum())
    stats = {
        "shape": list(values.shape),
        "voxel_volume_mm3": voxel_mm3,
        "threshold": threshold,
        "mask_voxels": count,
        "mask_volume_ml": count * voxel_mm3 / 1000.0,
        "mean_in_mask": float(values[mask].mean()) if count else None,
        "mean_all": float(values.mean()) if values.size else None,
    }
    return mask, stats


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m x2c.demo_pipeline", description=__doc__)
    parser.add_argument("input", help="a NIfTI image (.nii or .nii.gz)")
    parser.add_argument("outdir", help="directory for mask.nii.gz and stats.json")
    parser.add_argument("--label", default="", help="a label recorded verbatim in stats.json")
    parser.add_argument("--fraction", type=float, default=0.2)
    args = parser.parse_args(argv)

    img: Any = nib.load(args.input)  # a spatial image; nibabel's stubs say FileBasedImage
    mask, stats = brain_stats(
        img.get_fdata(dtype=np.float32), img.header.get_zooms(), args.fraction
    )
    os.makedirs(args.outdir, exist_ok=True)
    nifti: Any = nib.Nifti1Image  # untyped constructor
    mask_img = nifti(mask.astype(np.uint8), img.affine)
    nib.save(mask_img, os.path.join(args.outdir, "mask.nii.gz"))
    stats.update(
        label=args.label,
        input=os.path.basename(args.input),
        fraction=args.fraction,
        numpy=np.__version__,
        nibabel=nib.__version__,
    )
    with open(os.path.join(args.outdir, "stats.json"), "w", encoding="utf-8") as fh:
        json.dump(stats, fh, indent=2, sort_keys=True)
        fh.write("\n")
    sys.stdout.write(f"demo: {stats['mask_voxels']} voxels, {stats['mask_volume_ml']:.1f} ml\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
