"""The local scheduler: a bounded pool of detached processes on a host, with SLURM's semantics.

Why this shape: every action goes through the Runner (so the same code drives the local machine
or an SSH host), and all state lives in files on the host, one directory per job under
``state_dir``, so a restarted orchestrator sees queued, running and finished jobs as they are:

- ``submit`` writes the job's directory (script, log, workdir, walltime as one value per file),
  ``env``: the submitter's values of the names in ``JobSpec.env`` only (issue 9), and a
  ``queued`` flag; nothing is interpolated into shell code, values are positional args.
- ``poll`` scans the jobs that have not ended (and those asked about) in one call, then launches
  the oldest queued jobs while fewer than ``max_local_jobs`` run (queued beyond the limit =
  PENDING). So the pool advances only while an orchestrator polls; running jobs do not need
  one.
- A launch runs under ``env -i PATH=...`` and is ``setsid bash -c LAUNCHER dir &`` with every
  descriptor on /dev/null; the job starts under ``env -i`` with the saved ``env``. The launcher
  leads its own session, survives the orchestrator, writes ``pid``, starts the job in a new
  session of its own (``jobpid`` is that process group), enforces the walltime with a watchdog,
  and writes the job's exit code to ``rc`` when it ends.
- ``cancel`` writes a ``cancelled`` flag, then signals the job's process group; the launcher
  checks the flag after writing ``jobpid``, so a cancel racing a launch is never lost.
- A launcher that died without writing ``rc`` (host reboot) is reported LEFT_QUEUE, and the
  poller decides from the job's own exit marker.
A live-pid check is ``kill -0``: after a reboot a recycled pid could look alive; the rc file wins.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence

from x2c.config import SchedulerConfig
from x2c.errors import ConfigError, SchedulerOutputError, SubmissionError
from x2c.hosts.base import Runner
from x2c.jobenv import job_env_names
from x2c.schedulers.base import FoundJob, JobId, JobSpec, JobState, JobStatus, Scheduler, absent

log = logging.getLogger(__name__)

# ``.live/<id>``: one empty file per job that has not ended (made before ``queued``, removed
# by the launcher once ``rc`` is written, or by a cancel that came before the launch). A state
# directory from before ``.live`` existed gets it from its jobs without ``rc``, once.
_LIVE_INDEX = r"""[ -d "$1/.live" ] || { t=$1/.live.tmp.$$; mkdir -p "$t" &&
  (cd "$1" && for j in *; do [ -e "$j/queued" ] && [ ! -e "$j/rc" ] &&
    { [ -e "$j/launched" ] || [ ! -e "$j/cancelled" ]; } && : > "$t/$j"; done; :) &&
  mv -T "$t" "$1/.live" 2>/dev/null || rm -rf "$t"; }
"""

_SUBMIT = (
    r"""set -e; mkdir -p "$1"
"""
    + _LIVE_INDEX
    + r"""d=$1/$2; mkdir "$d"
printf '%s' "$3" > "$d/name"; printf '%s' "$4" > "$d/tag"; printf '%s' "$5" > "$d/script"
printf '%s' "$6" > "$d/stdout"; printf '%s' "$7" > "$d/workdir"; printf '%s' "$8" > "$d/walltime"
env -0 | grep -z -E "^($9)=" > "$d/env" || :
: > "$1/.live/$2"; : > "$d/queued"
"""
)

# One line per job: id, state, rc (or -), flags (c = cancelled, t = timed out), for the jobs
# that have not ended (``.live``) and the ids given. Not the whole directory: every submit
# scans, and scanning the ended jobs too made N submissions cost O(N^2) (measured: ~14 ms per
# experiment at N=1,000, most of the orchestrator's growth from N=100). Shell builtins only
# inside the loop (read, not $(cat ...)): a fork per job was quadratic in forks.
_SCAN = (
    r"""[ -d "$1" ] || exit 0
"""
    + _LIVE_INDEX
    + r"""cd "$1"; shift
for j in "$@" .live/*; do
  j=${j#.live/}
  [ -e "$j/queued" ] || continue
  rc=-; f=; [ -e "$j/cancelled" ] && f=${f}c; [ -e "$j/timedout" ] && f=${f}t
  if [ -e "$j/rc" ]; then s=done; read -r rc < "$j/rc" || :
  elif [ -e "$j/launched" ] && [ -e "$j/pid" ]; then
    read -r pid < "$j/pid" || :
    if kill -0 "$pid" 2>/dev/null; then s=running; else s=vanished; fi
  elif [ -e "$j/launched" ]; then s=starting
  elif [ -n "$f" ]; then s=cancelled
  else s=queued; fi
  printf '%s %s %s %s\n' "$j" "$s" "${rc:--}" "${f:--}"
done
"""
)

_LAUNCHER = r"""d=$1; echo $$ > "$d/pid.tmp"; mv "$d/pid.tmp" "$d/pid"
script=$(cat "$d/script"); out=$(cat "$d/stdout"); wt=$(cat "$d/walltime")
e=(); while IFS= read -r -d '' kv; do e+=("$kv"); done < "$d/env"
cd "$(cat "$d/workdir")" 2>/dev/null || cd /
setsid env -i "${e[@]}" bash "$script" > "$out" 2>&1 < /dev/null &
jp=$!; echo "$jp" > "$d/jobpid"
[ -e "$d/cancelled" ] && kill -TERM "-$jp" 2>/dev/null
wp=
if [ "$wt" -gt 0 ]; then
  setsid sh -c 'sleep "$1"; : > "$2/timedout"; kill -TERM "-$3"; sleep 5; kill -KILL "-$3"' \
    x2c-watchdog "$wt" "$d" "$jp" < /dev/null > /dev/null 2>&1 &
  wp=$!
fi
wait "$jp"; rc=$?
[ -n "$wp" ] && kill -TERM "-$wp" 2>/dev/null
echo "$rc" > "$d/rc.tmp"; mv "$d/rc.tmp" "$d/rc"; rm -f "${d%/*}/.live/${d##*/}"
"""

_LAUNCH = r"""l=$1; d=$2; shift 2
for j; do
  [ -e "$d/$j/cancelled" ] && continue
  mkdir "$d/$j/launched" 2>/dev/null || continue
  setsid bash -c "$l" x2c-launcher "$d/$j" < /dev/null > /dev/null 2>&1 &
done
"""

# The launch runs with PATH alone: the launcher and its watchdog never hold the environment of
# whoever polled (an orchestrator's XNAT_PASS; issue 9). The job gets the names submit saved.
_CLEAN = 'exec env -i PATH="$PATH" sh -c "$0" "$@"'

_CANCEL = r"""d=$1; shift
for j; do
  [ -d "$d/$j" ] && [ ! -e "$d/$j/rc" ] || continue
  : > "$d/$j/cancelled"
  [ -e "$d/$j/launched" ] || rm -f "$d/.live/$j"
  [ -e "$d/$j/jobpid" ] && kill -TERM "-$(cat "$d/$j/jobpid")" 2>/dev/null
done; exit 0
"""

_FIND = r"""cd "$1" 2>/dev/null || exit 0
for j in *; do [ -e "$j/tag" ] && printf '%s\t%s\t%s\n' "$j" "$(cat "$j/tag")" "$(cat "$j/name")"
done; exit 0
"""


def parse_scan(text: str) -> dict[JobId, JobStatus]:
    """The scan's lines as statuses; a launcher that vanished is LEFT_QUEUE (the marker decides)."""
    out: dict[JobId, JobStatus] = {}
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) != 4:
            raise SchedulerOutputError(f"unexpected local scan line {line!r}", output=text)
        job_id, native, rc, flags = parts
        code = int(rc) if rc.lstrip("-").isdigit() else None
        if native == "done" and "c" in flags:
            status = JobStatus(JobState.CANCELLED, "CANCELLED", "cancelled", code)
        elif native == "done" and "t" in flags and code != 0:
            status = JobStatus(JobState.TIMEOUT, "TIMEOUT", "walltime exceeded", code)
        elif native == "done":
            state = JobState.COMPLETED if code == 0 else JobState.FAILED
            status = JobStatus(state, f"EXIT {rc}", "" if code == 0 else f"exit code {rc}", code)
        else:
            state = _LIVE.get(native, JobState.UNKNOWN)
            status = JobStatus(state, native.upper(), "" if state is not JobState.UNKNOWN else line)
        out[JobId(job_id)] = status
    return out


_LIVE = {
    "queued": JobState.PENDING,
    "starting": JobState.RUNNING,
    "running": JobState.RUNNING,
    "cancelled": JobState.CANCELLED,
    "vanished": JobState.LEFT_QUEUE,
}


class LocalScheduler(Scheduler):
    """A bounded pool of processes on one host (``SchedulerConfig.max_local_jobs`` slots),
    driven through a Runner; job directories live under ``state_dir`` on that host."""

    kind = "local"

    def __init__(
        self, runner: Runner, config: SchedulerConfig | None = None, state_dir: str | None = None
    ) -> None:
        super().__init__(runner, config)
        state = state_dir or self.config.local_state_dir
        if not state or not state.startswith("/"):
            raise ConfigError(
                "the local scheduler needs an absolute state directory on the host; "
                "set scheduler.local_state_dir (e.g. <workdir>/.x2c-local)"
            )
        self.state_dir = state.rstrip("/")

    def submit(self, spec: JobSpec) -> JobId:
        job_id = JobId(f"{time.time_ns()}{secrets.randbelow(1000):03d}")
        try:
            names = "|".join(job_env_names(spec.env))  # identifiers only: safe in the regex
        except ValueError as exc:
            raise SubmissionError(
                f"job {spec.name!r}: {exc}; check the pipeline's passenv"
            ) from exc
        fields = [spec.name, spec.tag, spec.script_path, spec.stdout_path, spec.workdir]
        argv = ["sh", "-c", _SUBMIT, "x2c-submit", self.state_dir, job_id, *fields]
        done = self.runner.run([*argv, str(max(0, spec.walltime_s)), names])
        if done.returncode != 0:
            raise SubmissionError(
                f"could not queue {spec.name!r} in {self.state_dir} on {self.host}: "
                f"{done.stderr.strip()}; check the directory is writable",
                stderr=done.stderr,
                argv=argv,
            )
        log.info("queued %s as local job %s on %s", spec.name, job_id, self.host)
        self._schedule()
        return job_id

    def _scan(self, ids: Sequence[JobId] = ()) -> dict[JobId, JobStatus]:
        """The jobs that have not ended, and ``ids`` whatever their state."""
        argv = ["sh", "-c", _SCAN, "x2c-scan", self.state_dir, *ids]
        return parse_scan(self._run(argv, "local job scan").stdout)

    def _schedule(self, ids: Sequence[JobId] = ()) -> dict[JobId, JobStatus]:
        """Scan (:meth:`_scan`), then launch the oldest queued jobs into the free slots."""
        statuses = self._scan(ids)
        running = sum(s.state is JobState.RUNNING for s in statuses.values())
        free = self.config.max_local_jobs - running
        queued = sorted(j for j, s in statuses.items() if s.state is JobState.PENDING)
        start = queued[: max(0, free)]
        if start:
            argv = ["sh", "-c", _CLEAN, _LAUNCH, "x2c-launch", _LAUNCHER, self.state_dir, *start]
            self._run(argv, "local job launch")
            for job_id in start:
                statuses[job_id] = JobStatus(JobState.RUNNING, "STARTING")
        return statuses

    def poll(self, ids: Sequence[JobId]) -> dict[JobId, JobStatus]:
        if not ids:
            return {}
        statuses = self._schedule(ids)
        return absent(ids, {j: statuses[j] for j in ids if j in statuses})

    def observe(self, ids: Sequence[JobId]) -> dict[JobId, JobStatus]:
        statuses = self._scan(ids)
        return absent(ids, {j: statuses[j] for j in ids if j in statuses})

    def cancel(self, ids: Sequence[JobId]) -> None:
        if ids:
            self._run(["sh", "-c", _CANCEL, "x2c-cancel", self.state_dir, *ids], "local cancel")

    def find(self, tag: str) -> list[FoundJob]:
        done = self._run(["sh", "-c", _FIND, "x2c-find", self.state_dir], "local job listing")
        tagged = []
        for line in done.stdout.splitlines():
            job_id, job_tag, name = [*line.split("\t"), "", ""][:3]
            if job_tag == tag:
                tagged.append((JobId(job_id), name))
        statuses = self._scan([job_id for job_id, _ in tagged]) if tagged else {}
        return [
            FoundJob(job_id, name, tag, statuses[job_id])
            for job_id, name in tagged
            if job_id in statuses
        ]
