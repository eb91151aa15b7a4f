"""Claims on Y: which experiments are in flight on a host, and who may work on each.

A job's life is independent of any orchestrator process, so what is "in flight" is kept where it
survives every crash of Z: beside the job, in its job directory on the compute host. Two marker
files, both touched and tested only under one ``flock`` on ``<workdir>/.x2c-claims.lock`` (a
lock the kernel drops when its holder dies, and that compares no clocks but Y's own):

- ``inflight``: the experiment holds one of the host's ``max_in_flight`` places, from the moment
  a pass reserves it (before staging) until its result is uploaded or its failure recorded.
  Counting these files IS the in-flight count, so the cap holds across concurrent passes,
  processes and orchestrator machines. A pass that is staging or submitting renews its claim
  (touches the file); a claim whose experiment has no job and that was not renewed for
  ``HostConfig.claim_stale_s`` was left by a crash and is taken over, by one pass only.
- ``finishing``: a pass is collecting and uploading the experiment's result; another pass
  leaves it alone until the claim is released or goes stale.

One remote command per host reads every claim with its registry entry (:func:`scan`), one
reserves places for a whole pass (:func:`reserve`). Paths reach the fixed ``sh`` programs as
positional arguments, never inside their text.
"""

from __future__ import annotations

import enum
import logging
import os
import posixpath
import secrets
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from x2c import jobdir as jd
from x2c.errors import PipelineError, RemoteCommandError, SchedulerOutputError, X2CError
from x2c.hosts import Host

log = logging.getLogger(__name__)

LOCK_FILE = ".x2c-claims.lock"
LOCK_WAIT_S = 120

# $1 boundary, $2 workdir. One record per claimed job directory: ages in seconds by Y's clock.
_SCAN = r"""b=$1; cd "$2" 2>/dev/null || { printf '%s END\n' "$b"; exit 0; }
now=$(date +%s)
for m in */*/inflight; do
  [ -e "$m" ] || continue
  d=${m%/inflight}
  c=$(( now - $(stat -c %Y -- "$m" 2>/dev/null || echo "$now") ))
  f=-
  [ -e "$d/finishing" ] && f=$(( now - $(stat -c %Y -- "$d/finishing" 2>/dev/null || echo "$now") ))
  printf '%s D %s %s %s\n' "$b" "$c" "$f" "$d"
  printf '%s\n' "$(head -c 200 -- "$m" 2>/dev/null | tr -d '\n')"
  cat -- "$d/job.json" 2>/dev/null
  printf '\n'
done
printf '%s END\n' "$b"
"""

# $1 workdir, $2 cap, $3 stale seconds, $4 lock file, $5 wait, $6 this claimant, then (mode,
# dir, owner) triples: n = a new claim within the cap; t = take over a claim not renewed for
# $3 s; d = take over a claim still held by ``owner`` (a process known dead); t and d only while
# the claim exists. A claim holds its claimant. Prints "C dir" / "T dir" for each granted and
# "G dir" for each claim to take over that is gone.
_RESERVE = r"""mkdir -p -- "$1" && cd "$1" || exit 66
exec 9>>"$4" || exit 67
flock -x -w "$5" 9 || exit 75
now=$(date +%s); cap=$2; stale=$3; me=$6; shift 6
n=0; for m in */*/inflight; do [ -e "$m" ] && n=$((n+1)); done
while [ $# -ge 3 ]; do
  mode=$1; d=$2; was=$3; shift 3
  if [ -e "$d/inflight" ]; then
    case $mode in
      t) age=$(( now - $(stat -c %Y -- "$d/inflight" 2>/dev/null || echo "$now") ))
         [ "$age" -ge "$stale" ] || continue;;
      d) [ "$(head -c 200 -- "$d/inflight" | tr -d '\n')" = "$was" ] || continue;;
      *) continue;;
    esac
    printf '%s\n' "$me" > "$d/inflight" && printf 'T %s\n' "$d"
    continue
  fi
  # a claim to take over that is gone was released (its job finished) since the scan: the
  # next pass checks the experiment afresh
  [ "$mode" = n ] || { printf 'G %s\n' "$d"; continue; }
  [ "$n" -lt "$cap" ] || continue
  mkdir -p -- "$d" && printf '%s\n' "$me" > "$d/inflight" && { n=$((n+1)); printf 'C %s\n' "$d"; }
done
exit 0
"""

# $1 workdir, $2 dir, $3 stale seconds, $4 lock file, $5 wait: take the finishing claim.
_FINISHING = r"""cd "$1" 2>/dev/null || exit 66
[ -d "$2" ] || exit 66
exec 9>>"$4" || exit 67
flock -x -w "$5" 9 || exit 75
[ -d "$2" ] || exit 66
r=C
if [ -e "$2/finishing" ]; then
  age=$(( $(date +%s) - $(stat -c %Y -- "$2/finishing" 2>/dev/null || date +%s) ))
  [ "$age" -ge "$3" ] || exit 73
  r=T
fi
# another pass may have finished and cleaned the job meanwhile: gone is not a failure
touch -- "$2/finishing" 2>/dev/null || { [ -d "$2" ] || exit 66; touch -- "$2/finishing"; exit 1; }
echo "$r"
"""

TRASH = ".x2c-trash"
TRASH_SWEEP_MIN = 24 * 60
"""A removal that was killed while deleting leaves its directory in the trash; the next removal
deletes what has been there this many minutes (a live deletion of a huge job directory on a
slow file system is never swept from under it)."""

# $1 workdir, $2 dir, $3 lock file, $4 wait, $5 trash, $6 sweep minutes: remove a job directory.
# Under the lock it is moved out of every claim's way at once (a scan, which takes no lock,
# never sees a claim without its registry entry get taken over as abandoned); it is deleted
# after the lock is let go, with what killed removals left in the trash long ago.
_REMOVE = r"""cd "$1" 2>/dev/null || exit 0
[ -e "$2" ] || exit 0
exec 9>>"$3" || exit 67
flock -x -w "$4" 9 || exit 75
[ -e "$2" ] || exit 0
mkdir -p -- "$5" && t=$(mktemp -d "$5/XXXXXXXX") && mv -- "$2" "$t/" || exit 1
exec 9>&-
rm -rf -- "$t" || exit 1
find "$5" -mindepth 1 -maxdepth 1 -mmin "+$6" -exec rm -rf -- {} + 2>/dev/null || :
"""


@dataclass(frozen=True)
class Claim:
    """One claimed job directory as :func:`scan` found it: where, how long since its claim was
    renewed, whether (and since when) a pass is finishing it, and its registry entry."""

    jobdir: jd.JobDir
    relpath: str
    """``<pipeline>/<experiment>`` below the host's workdir (safe components)."""
    age_s: int
    finishing_age_s: int | None
    record: jd.JobRecord | None
    owner: str = ""
    """Who holds the claim: ``<orchestrator host> <pid>`` (:func:`claimant`)."""

    def abandoned(self, stale_s: float) -> bool:
        """True when nobody works on this claim any more: not renewed for ``stale_s``, or
        held by a process of this machine that is gone (Ctrl-C, SIGTERM, kill -9)."""
        return self.age_s >= stale_s or owner_dead(self.owner)


def claimant() -> str:
    """This process as a claim's holder: this machine's name and the process id."""
    return f"{socket.gethostname()} {os.getpid()}"


def owner_dead(owner: str) -> bool:
    """True only when ``owner`` is a process of THIS machine that no longer runs (another
    machine's processes cannot be seen: their claims go stale instead)."""
    host, _, pid = owner.partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def relpath(workdir: str, pipeline: str, experiment: str) -> str:
    """The job directory of ``pipeline`` for ``experiment`` relative to ``workdir``."""
    root = jd.job_dir(workdir, pipeline, experiment).root
    return posixpath.relpath(root, posixpath.normpath(workdir))


def _boundary() -> str:
    return f"--x2c-{secrets.token_hex(8)}--"


def scan(host: Host, workdir: str) -> dict[str, Claim]:
    """Every claimed job directory under ``workdir`` on ``host``, by relative path, with its
    registry entry: ONE command, whatever the number of jobs."""
    boundary = _boundary()
    done = host.runner.run(["sh", "-c", _SCAN, "x2c-scan", boundary, workdir])
    if done.returncode != 0:
        raise RemoteCommandError(
            f"reading the claims under {workdir} on {host.name} failed: {done.stderr.strip()}",
            host=host.name,
            returncode=done.returncode,
            stderr=done.stderr,
        )
    chunks = done.stdout.split(boundary + " ")
    if not chunks or chunks[-1].strip() != "END":
        raise SchedulerOutputError(
            f"the claim scan on {host.name} ended early", output=done.stdout[-2000:]
        )
    found: dict[str, Claim] = {}
    for chunk in chunks[1:-1]:
        head, _, body = chunk.partition("\n")
        parts = head.split(" ", 4)
        if len(parts) != 4 or parts[0] != "D":
            raise SchedulerOutputError(f"unexpected claim record {head!r}", output=head)
        _, age, finishing, rel = parts
        owner, _, body = body.partition("\n")
        dirpath = jd.JobDir(posixpath.join(posixpath.normpath(workdir), rel))
        try:
            record = jd.decode_record(body.strip().encode() or None, dirpath)
        except PipelineError as exc:
            log.warning("%s on %s: %s", rel, host.name, exc)
            record = None
        found[rel] = Claim(
            dirpath, rel, int(age), None if finishing == "-" else int(finishing), record, owner
        )
    return found


@dataclass(frozen=True)
class Granted:
    """What :func:`reserve` granted: new claims within the cap and stale claims taken over;
    ``gone``: claims to take over that were released since the scan (not granted)."""

    new: tuple[str, ...]
    taken_over: tuple[str, ...]
    gone: tuple[str, ...] = ()


def reserve(
    host: Host,
    workdir: str,
    *,
    cap: int,
    stale_s: float,
    new: Sequence[str] = (),
    take_over: Sequence[Claim] = (),
) -> Granted:
    """Claim places on ``host`` under the host-wide lock: each of ``new`` (relative job
    directories, in priority order) while fewer than ``cap`` claims exist, and each claim of
    ``take_over`` that is still abandoned (see :meth:`Claim.abandoned`). One command."""
    if not new and not take_over:
        return Granted((), ())
    argv = ["sh", "-c", _RESERVE, "x2c-reserve", workdir, str(cap), str(int(stale_s))]
    argv += [LOCK_FILE, str(LOCK_WAIT_S), claimant()]
    for c in take_over:
        argv += ["d", c.relpath, c.owner] if owner_dead(c.owner) else ["t", c.relpath, ""]
    for d in new:
        argv += ["n", d, ""]
    done = host.runner.run(argv)
    if done.returncode != 0:
        raise RemoteCommandError(
            f"claiming experiments under {workdir} on {host.name} failed (exit "
            f"{done.returncode}): {done.stderr.strip() or 'the claims lock was busy'}; the "
            "next pass tries again",
            host=host.name,
            returncode=done.returncode,
            stderr=done.stderr,
        )
    got: dict[str, list[str]] = {"C": [], "T": [], "G": []}
    for line in done.stdout.splitlines():  # a login banner on stdout is no claim
        mode, _, rel = line.partition(" ")
        got.get(mode, []).append(rel)
    return Granted(tuple(got["C"]), tuple(got["T"]), tuple(got["G"]))


class Finishing(enum.Enum):
    """What :func:`take_finishing` got."""

    TAKEN = "taken"
    """Nobody was finishing the experiment."""
    TAKEN_OVER = "taken over"
    """A pass that was finishing it stopped (its claim went stale): it may have uploaded."""


def take_finishing(host: Host, workdir: str, rel: str, *, stale_s: float) -> Finishing | None:
    """Take the finishing claim of ``rel``; None when another pass holds a fresh one (or the
    job directory is gone)."""
    argv = ["sh", "-c", _FINISHING, "x2c-finishing", workdir, rel, str(int(stale_s))]
    done = host.runner.run([*argv, LOCK_FILE, str(LOCK_WAIT_S)])
    if done.returncode in (66, 73):
        return None
    if done.returncode != 0:
        raise RemoteCommandError(
            f"taking the finishing claim of {rel} on {host.name} failed: {done.stderr.strip()}",
            host=host.name,
            returncode=done.returncode,
            stderr=done.stderr,
        )
    return Finishing.TAKEN_OVER if done.stdout.strip() == "T" else Finishing.TAKEN


def renew(host: Host, *jobdirs: jd.JobDir, marker: str = jd.CLAIM) -> None:
    """Renew this pass's claims on ``jobdirs`` (still staging or submitting; with ``marker``
    :data:`~x2c.jobdir.FINISHING`, still finishing): one command. A claim released meanwhile
    stays released."""
    if jobdirs:
        paths = [posixpath.join(j.root, marker) for j in jobdirs]
        host.runner.run(["touch", "-c", "--", *paths])


@contextmanager
def renewing(
    host: Host, *jobdirs: jd.JobDir, stale_s: float, marker: str = jd.CLAIM
) -> Iterator[None]:
    """Renew the claims (``marker``) on ``jobdirs`` every quarter of ``stale_s`` while the
    block runs (a stage or an upload of large files can outlast the stale time, and so can the
    wait of a staged job for the rest of its array; a live pass must never look crashed)."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(stale_s / 4):
            try:
                renew(host, *jobdirs, marker=marker)
            except X2CError as exc:  # the step itself will meet the same connection trouble
                log.warning("renewing %d claim(s) on %s failed: %s", len(jobdirs), host.name, exc)

    thread = threading.Thread(target=loop, name=f"x2c-claims-{host.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def adopt(host: Host, jobdir: jd.JobDir) -> None:
    """Claim a place for a job that exists without one (submitted by hand, or by a version of
    x2c without claims): it is in flight, whatever the cap says."""
    path = posixpath.join(jobdir.root, jd.CLAIM)
    host.runner.run(["sh", "-c", 'printf "%s\\n" "$2" > "$1"', "x2c-adopt", path, claimant()])


def release(host: Host, jobdir: jd.JobDir, *, finishing_only: bool = False) -> None:
    """Give the experiment's place on the host back (and any finishing claim)."""
    paths = [posixpath.join(jobdir.root, jd.FINISHING)]
    if not finishing_only:
        paths.append(posixpath.join(jobdir.root, jd.CLAIM))
    host.runner.run(["rm", "-f", "--", *paths])


def remove(host: Host, workdir: str, rel: str) -> str | None:
    """Remove the job directory ``rel`` (:func:`relpath`; its claims with it) as one step under
    the claims lock: None when it is gone, else why not."""
    argv = ["sh", "-c", _REMOVE, "x2c-remove", workdir, rel, LOCK_FILE, str(LOCK_WAIT_S)]
    argv += [TRASH, str(TRASH_SWEEP_MIN)]
    done = host.runner.run(argv)
    if done.returncode == 0:
        return None
    return done.stderr.strip() or f"exit {done.returncode}"
