"""The recipe's steps for one experiment, one module each: :mod:`~x2c.recipe.select`,
:mod:`~x2c.recipe.stage`, :mod:`~x2c.recipe.build`, :mod:`~x2c.recipe.submit`,
:mod:`~x2c.recipe.collect`, :mod:`~x2c.recipe.upload`, :mod:`~x2c.recipe.clean`; the job
registry on Y in :mod:`~x2c.recipe.registry`. Each step takes a :class:`Handle` (the
experiment's pipeline, host, job directory and scheduler, resolved once by :func:`handle`) and
calls ONE layer module; :mod:`x2c.reconcile` runs them in short passes, :mod:`x2c.plan` is the
dry run, and ``tasks/`` wraps each pass phase.

What survives a crash of the orchestrator is the experiment's claim and job registry entry
(``inflight`` and ``job.json`` in the job directory on Y, :mod:`x2c.claims`, :mod:`x2c.jobdir`),
the job itself (detached), the files on Y and the resource on XNAT. Where a pass is killed, and
what the next pass does:

=====================================  =======================================================
killed                                 the next pass
=====================================  =======================================================
after claiming, during select/stage/   the claim has no job; once it is ``claim_stale_s`` old
build                                  one pass takes it over and launches again (stage skips
                                       the files already verified on Y, build writes a new tag)
after ``submitting`` was recorded,     the stale claim's ``find(tag)`` finds nothing and no
before sbatch ran                      exit marker exists: launched again (the only job)
after sbatch, before the registry      ``find(tag)`` finds the job: in flight, or ended; if
got the job id                         the scheduler already forgot it (SLURM's MinJobAge) the
                                       exit marker and run.env tell how it ended
while the job runs                     the poll sees it queued/running: nothing to do
after the job ended, unrecorded        the poll judges it (:func:`x2c.poller.judge`)
mid-upload                             the resource has no provenance (INCOMPLETE): the
                                       finishing claim goes stale, the upload is redone
after the upload (``uploaded`` or      the next pass verifies it (one listing against the
not yet recorded), before the clean    md5s the provenance records): DONE is kept as it is
                                       and the job directory removed; anything else is
                                       uploaded again from Y (at most ``MAX_UPLOADS`` times)
=====================================  =======================================================

A failed job is reported failed again by every pass (the registry keeps its state, exit code,
reason and log tail; the ledger answers without a request) and is launched again only when the
pipeline version or the selected inputs changed, or when the caller passes
``retry_failed=True``: a failing input does not silently burn cluster hours every night.

Secrets: a :class:`Target` holds names only; the XNAT password reaches the HTTP client and
nothing else (job scripts are rendered with ``forbidden=xnat_forbidden(cfg)``, provenance and
:func:`plan` carry the server URL without credentials).
"""

# tasks/ and flows/ name these through the recipe (recipe.Runtime, recipe.runtime(...),
# recipe.close_runtimes()); the explicit "as" keeps them part of its interface for mypy
from x2c.recipe import registry as registry
from x2c.recipe.build import build as build
from x2c.recipe.build import job_spec as job_spec
from x2c.recipe.build import render_script as render_script
from x2c.recipe.clean import clean as clean
from x2c.recipe.collect import collect as collect
from x2c.recipe.handle import Handle as Handle
from x2c.recipe.handle import Target as Target
from x2c.recipe.handle import choose as choose
from x2c.recipe.handle import handle as handle
from x2c.recipe.handle import name_of as name_of
from x2c.recipe.handle import targets as targets
from x2c.recipe.select import select as select
from x2c.recipe.stage import stage as stage
from x2c.recipe.submit import array_tag as array_tag
from x2c.recipe.submit import submit as submit
from x2c.recipe.submit import submit_array as submit_array
from x2c.recipe.upload import upload as upload
from x2c.runtime import Runtime as Runtime
from x2c.runtime import close_runtimes as close_runtimes
from x2c.runtime import runtime as runtime
