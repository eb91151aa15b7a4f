"""The last step, clean: the job directory on Y goes once its result is verified on XNAT."""

from __future__ import annotations

import logging

from x2c import claims
from x2c.errors import PipelineError
from x2c.poller import is_live
from x2c.recipe import registry
from x2c.recipe.handle import Handle
from x2c.recipe.submit import leave_array

log = logging.getLogger(__name__)


def clean(h: Handle) -> bool:
    """Remove the job directory on Y after a verified upload, unless the settings say
    ``keep_workdir``; refuses while the registry says a job is still queued or running.
    Returns whether the directory was removed."""
    root = h.jobdir.root
    if h.rt.settings.keep_workdir:
        log.info("%s: keeping %s on %s (keep_workdir)", h.name, root, h.t.host)
        return False
    record = registry.read(h)
    if record is not None and is_live(record.state):
        raise PipelineError(
            f"{h.name}: job {record.job_id} is still {record.state.lower()}; not removing {root}"
        )
    rel = claims.relpath(h.cfg.workdir, h.pipe.name, h.t.experiment)
    failed = claims.remove(h.host, h.cfg.workdir, rel)
    if failed is not None:
        log.warning("could not remove %s on %s: %s", root, h.t.host, failed)
        return False
    if record is not None and record.tag:
        leave_array(h, record.tag)
    log.info("%s: removed %s on %s", h.name, root, h.t.host)
    return True
