"""Step 6, collect: the job's archive on Y, checked there before any byte leaves it."""

from __future__ import annotations

import logging

from x2c.archive_check import check_archive
from x2c.errors import IntegrityError
from x2c.recipe import registry
from x2c.recipe.handle import Handle
from x2c.sources import FileRef

log = logging.getLogger(__name__)


def collect(h: Handle) -> FileRef:
    """The job's archive on Y, described there (size and md5, one command) and checked against
    what the job recorded in ``run.env``; its ``path`` is relative to the job directory."""
    jobdir = h.jobdir
    # every member listed and checked on Y before any byte leaves it (issue 9)
    ref = check_archive(h.host, jobdir.archive(h.pipe.archive_name), root=jobdir.root).ref
    run = registry.run_info(h)
    if (
        run is not None
        and run.archive_md5
        and (run.archive_md5, run.archive_size)
        != (
            ref.md5,
            ref.size,
        )
    ):
        raise IntegrityError(
            f"{h.name}: archive {ref.path} on {h.t.host} is {ref.size} bytes md5 {ref.md5}, but "
            f"the job recorded {run.archive_size} bytes md5 {run.archive_md5}; rerun the job "
            "(pass retry_failed=True) or inspect the job directory",
            name=ref.path,
            expected=str(run.archive_md5),
            actual=str(ref.md5),
        )
    log.info("%s: archive %s, %d bytes, md5 %s", h.name, ref.path, ref.size, ref.md5)
    return ref
