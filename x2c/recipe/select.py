"""Step 1, select: the inputs of an experiment that its pipeline declares."""

from __future__ import annotations

import logging

from x2c import xnat
from x2c.errors import NothingToProcessError
from x2c.recipe.handle import Handle

log = logging.getLogger(__name__)


def select(h: Handle) -> xnat.SelectedInputs:
    """The inputs of ``h`` the pipeline declares (1+ requests: the experiment's document is
    the one its check read in this pass, when it did). Raises
    :class:`~x2c.errors.NothingToProcessError` with the reason when nothing matches; the
    ledger remembers it, so the nightly run skips the experiment until it changes."""
    t = h.t
    contents = h.rt.documents.take(t.experiment)
    try:
        selection = xnat.select_inputs(h.rt.xnat, t.experiment, h.pipe.inputs, contents)
    except NothingToProcessError as exc:
        if t.last_modified:
            h.rt.ledger.record_nothing(
                t.project, t.pipeline, t.experiment, t.last_modified, h.pipe.version, exc.reason
            )
        raise
    log.info("%s: %d input files, %d bytes", h.name, len(selection.files), selection.total_size)
    return selection
