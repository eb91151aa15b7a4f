"""What a pipeline takes from an experiment: a pure description, matched by ``x2c.xnat``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class InputSelection(BaseModel):
    """Which scans and resources of an experiment a pipeline needs.

    ``scan_types`` are shell-style wildcards matched case-insensitively against a scan's type
    (e.g. ``"T1*"``, ``"*MPRAGE*"``); ``resource`` is the scan resource to take (``NIFTI``,
    ``DICOM``); ``experiment_resources`` are optional session-level resources such as an earlier
    ``FREESURFER6`` archive to resume from.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scan_types: tuple[str, ...] = Field(min_length=1)
    resource: str = "NIFTI"
    quality: tuple[str, ...] = Field(
        default=(), description="Accepted scan quality values (e.g. usable); empty accepts any"
    )
    pick: Literal["all", "first", "last"] = Field(
        default="all", description="Among matching scans (ordered by scan ID), which to take"
    )
    experiment_resources: tuple[str, ...] = Field(
        default=(), description="Optional session-level resources to bring along if present"
    )
