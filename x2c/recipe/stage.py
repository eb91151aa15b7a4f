"""Step 2, stage: the selected files from XNAT to the job's ``inputs/`` on Y, verified."""

from __future__ import annotations

import logging

from x2c import transfers, xnat
from x2c.recipe.handle import Handle

log = logging.getLogger(__name__)


def stage(h: Handle, selection: xnat.SelectedInputs) -> transfers.StageReport:
    """Stream the selected files from XNAT to the job's ``inputs/`` on Y, verified; files
    already there and right are skipped (so a rerun after a crash costs almost nothing)."""
    report = transfers.stage(
        xnat.XnatByteSource(h.rt.xnat),
        selection.files,
        h.host,
        h.jobdir.inputs,
        max_parallel=max(1, min(h.cfg.max_transfers, h.rt.settings.limits.xnat_transfers)),
    )
    log.info(
        "%s: staged %d files (%d bytes), %d already there",
        h.name,
        report.copied,
        report.bytes_copied,
        report.skipped,
    )
    return report
