"""Rendering a pipeline into the bash script one job runs on a compute node.

:func:`render_job_script` is a pure function of its arguments. The script it returns:

0. starts itself again under ``env -i`` with only the names of :mod:`x2c.jobenv` (the basics,
   the pipeline's ``passenv``, the scheduler's own): nothing of the environment it was
   submitted from (an orchestrator's ``XNAT_PASS``) reaches the job;
1. runs under ``set -euo pipefail`` and installs an EXIT trap that appends ``ended_at`` and
   ``exit_code`` to ``run.env`` and then writes the ``exit_code`` marker atomically (tmp + mv),
   so the marker's presence means every other file of the job is final;
2. changes into the job directory, sends its own stdout and stderr to ``job.log`` and records
   ``started_at``, ``node`` and ``job_id`` in ``run.env``;
3. checks the ``{input}`` file is there (exit 66 if not) and unpacks an earlier result to
   resume from, when the pipeline and the caller ask for it;
4. runs each command step through the container runtime (:func:`x2c.containers.container_argv`)
   with explicit binds: ``inputs/`` read-only at ``/x2c/inputs``, ``outputs/`` at
   ``/x2c/outputs``;
5. checks every declared output pattern matches at least one file and nothing matched is empty,
   and that no symbolic link among them leads outside the job directory or nowhere, else exits
   65 with the reason (and the output's name) in the log;
6. packs the matched outputs into one archive (zip through ``python3``, or GNU ``tar``; links
   that stay inside are packed as the files they point to, never as links), writes
   ``manifest.md5`` and records the archive's md5 and size in ``run.env``.

Exit codes the script itself chooses: 65 declared outputs missing, empty or unsafe links, 66 a
staged input or the resume archive missing, 69 no python3 (zip) or realpath (links) on the node,
143 terminated (the scheduler's cancel or time limit); any other non-zero code is the failing
step's own.

Every value that reaches the shell is quoted with :func:`shlex.quote`; labels are data, never
code. The script never holds a password, a token or an XNAT address: :func:`check_script`
enforces that and :func:`render_job_script` calls it.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import shlex
import string
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from x2c import jobdir as jd
from x2c.config import ContainerRuntime, XnatConfig
from x2c.containers import Bind, container_argv, image_ref
from x2c.errors import PipelineError
from x2c.jobenv import case_pattern
from x2c.pipelines import Pipeline, template_fields

CONTAINER_INPUTS = "/x2c/inputs"
CONTAINER_OUTPUTS = "/x2c/outputs"
EXIT_OUTPUTS_MISSING = 65
EXIT_INPUT_MISSING = 66
EXIT_TOOL_MISSING = 69

_URL = re.compile(r"https?://", re.IGNORECASE)
_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")

# The packer runs on the node, outside any container, with the node's python3. It stores each
# file under the path it is given (relative to outputs/).
_ZIP_PACKER = """\
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
    for name in sys.argv[2:]:
        zf.write(name, name)
"""


def effective_runtime(pipeline: Pipeline, host_runtime: ContainerRuntime) -> ContainerRuntime:
    """The runtime a job uses: the pipeline's override, else the host's."""
    return pipeline.runtime or host_runtime


def primary_input(pipeline: Pipeline, inputs: Sequence[str]) -> str | None:
    """The staged file that ``{input}`` names: the first of ``inputs`` whose file name matches
    the pipeline's ``input_match``, or None."""
    for path in inputs:
        if fnmatch.fnmatchcase(posixpath.basename(path).lower(), pipeline.input_match.lower()):
            return jd.safe_relpath(path)
    return None


def _substitute(template: str, values: dict[str, str]) -> str:
    out = []
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if field is not None:
            out.append(values[field])
    return "".join(out)


def job_argv(
    pipeline: Pipeline,
    *,
    job_dir: str,
    subject: str,
    experiment: str,
    inputs: Sequence[str],
    runtime: ContainerRuntime,
    project: str = "",
    resume: str | None = None,
) -> list[list[str]]:
    """The pipeline's command steps with every placeholder filled in, one argv per step.

    Paths are as the command sees them: container paths (``/x2c/...``) inside a container,
    host paths under ``job_dir`` with runtime ``none``. Steps marked ``fresh`` run only without
    ``resume``, steps marked ``resume`` only with it.
    """
    runtime = effective_runtime(pipeline, runtime)
    staged = [jd.safe_relpath(p) for p in inputs]
    first = primary_input(pipeline, staged)
    if resume is not None:
        resume = jd.safe_relpath(resume)
    if runtime == "none":
        in_dir, out_dir = posixpath.join(job_dir, jd.INPUTS), posixpath.join(job_dir, jd.OUTPUTS)
    else:
        in_dir, out_dir = CONTAINER_INPUTS, CONTAINER_OUTPUTS
    values = {
        "subject": subject,
        "experiment": experiment,
        "project": project,
        "inputs": in_dir,
        "outputs": out_dir,
        "cpus": str(pipeline.cpus),
        "mem_mb": str(pipeline.mem_mb),
        "input": posixpath.join(in_dir, first) if first else "",
        "resume": posixpath.join(in_dir, resume) if resume else "",
    }
    steps = []
    for step in pipeline.command:
        if (step.when == "fresh" and resume) or (step.when == "resume" and not resume):
            continue
        if first is None and any("input" in template_fields(e) for e in step.argv):
            raise PipelineError(
                f"pipeline {pipeline.name} needs an input file matching "
                f"{pipeline.input_match!r} ({{input}}) but none of the {len(staged)} staged "
                f"files for experiment {experiment!r} matches; check the input selection"
            )
        steps.append([_substitute(element, values) for element in step.argv])
    return steps


def check_script(script: str, forbidden: Iterable[str] = ()) -> None:
    """Refuse a job script that carries an http(s) address, credentials in a URL, or any of
    the ``forbidden`` strings of four characters or more (the XNAT URL, password...).

    The error names what was found, never the value.
    """
    if _USERINFO.search(script):
        raise PipelineError("the job script would contain a URL with credentials; refusing")
    if _URL.search(script):
        raise PipelineError(
            "the job script would contain an http(s) address; compute nodes never talk to XNAT, "
            "so no label, path or setting passed to a job may carry one"
        )
    for index, secret in enumerate(forbidden):
        # shorter values would match ordinary script text; no real password is that short
        if len(secret) >= 4 and secret in script:
            raise PipelineError(
                f"the job script would contain forbidden value #{index + 1} (a secret or the "
                "XNAT address); refusing to write it"
            )


def xnat_forbidden(cfg: XnatConfig) -> list[str]:
    """The strings of an XNAT configuration that must never reach a job script: the password,
    the server URL and its host name. Pass the result as ``forbidden=`` to
    :func:`render_job_script`."""
    values = [cfg.password.get_secret_value(), cfg.url.rstrip("/")]
    host = urlsplit(cfg.url).hostname
    if host:
        values.append(host)
    return [v for v in values if v]


def _q(value: str) -> str:
    return shlex.quote(value)


def _qargv(argv: Sequence[str]) -> str:
    return " ".join(_q(a) for a in argv)


_ARCHIVES = (".zip", ".tar.gz", ".tgz", ".tar")


def find_resume(pipeline: Pipeline, inputs: Sequence[str]) -> str | None:
    """Where the earlier result to resume from was staged, relative to ``inputs/``, or None.

    The pipeline's resume resource is staged under ``resources/<label>/``: a single archive
    there is unpacked; several files are the result itself, and that directory is copied.
    """
    if pipeline.resume is None:
        return None
    prefix = f"resources/{pipeline.resume.resource}/"
    found = [p for p in inputs if p.startswith(prefix)]
    if not found:
        return None
    if len(found) == 1 and found[0].lower().endswith(_ARCHIVES):
        return found[0]
    return prefix.rstrip("/")


def _unpack_lines(source: str, into: str) -> list[str]:
    """Shell lines that bring the earlier result (path relative to the job dir) into outputs/:
    an archive is unpacked safely (python's zipfile drops absolute and ``..`` member paths,
    GNU tar refuses them), a directory is copied."""
    lower = source.lower()
    target = posixpath.join(jd.OUTPUTS, into) if into else jd.OUTPUTS
    missing = _q(f"the earlier result {source} to resume from is missing or empty")
    failed = _q(f"could not unpack {source}")
    if lower.endswith(".zip"):
        check = f"test -s {_q(source)}"
        action = f"python3 -m zipfile -e {_q(source)} {_q(target)} || x2c_die $? {failed}"
    elif lower.endswith(_ARCHIVES):
        check = f"test -s {_q(source)}"
        action = f"tar -xf {_q(source)} -C {_q(target)} --no-same-owner || x2c_die $? {failed}"
    else:
        check = f"test -d {_q(source)}"
        action = f"cp -R -- {_q(source + '/.')} {_q(target + '/')} || x2c_die $? " + _q(
            f"could not copy {source}"
        )
    return [
        f"{check} || x2c_die {EXIT_INPUT_MISSING} {missing}",
        f"mkdir -p -- {_q(target)}",
        action,
    ]


def render_job_script(
    pipeline: Pipeline,
    *,
    job_dir: str,
    subject: str,
    experiment: str,
    inputs: Sequence[str],
    runtime: ContainerRuntime = "none",
    project: str = "",
    resume: str | None = None,
    binds: Sequence[Bind] = (),
    path_prepend: Sequence[str] = (),
    directives: Sequence[str] = (),
    forbidden: Iterable[str] = (),
    oci_runtime: str | None = "runc",
    x2c_version: str = "",
) -> str:
    """The bash script that runs ``pipeline`` for one experiment in ``job_dir``.

    ``inputs`` are the staged files, relative to ``inputs/``, in the order the selection chose
    (``{input}`` is the first matching the pipeline's ``input_match``); ``resume`` is the
    earlier result, relative to ``inputs/`` (an archive or a directory, see
    :func:`find_resume`), or None. ``runtime`` is the host's
    default; the pipeline may override it.
    ``binds`` are extra site binds, ``path_prepend`` directories put in front of ``PATH`` (e.g.
    a virtualenv's ``bin`` for runtime ``none``), ``directives`` scheduler header lines (each
    must start with ``#``). ``forbidden`` lists strings that must never appear (XNAT URL,
    user, password): rendering fails if one does.
    """
    if not job_dir.startswith("/"):
        raise PipelineError(f"job directory {job_dir!r} must be an absolute path on the host")
    runtime = effective_runtime(pipeline, runtime)
    if resume is not None and pipeline.resume is None:
        raise PipelineError(f"pipeline {pipeline.name} does not resume from earlier results")
    for line in directives:
        if not line.startswith("#") or "\n" in line or "\r" in line:
            raise PipelineError(f"scheduler directive {line!r} must be one line starting with #")
    steps = job_argv(
        pipeline,
        job_dir=job_dir,
        subject=subject,
        experiment=experiment,
        inputs=inputs,
        runtime=runtime,
        project=project,
        resume=resume,
    )
    all_binds = [
        Bind(posixpath.join(job_dir, jd.INPUTS), CONTAINER_INPUTS, read_only=True),
        Bind(posixpath.join(job_dir, jd.OUTPUTS), CONTAINER_OUTPUTS, read_only=False),
        *(Bind(b.src, b.dst, b.read_only) for b in pipeline.binds),
        *binds,
    ]
    image = image_ref(runtime, pipeline.image, pipeline.digest)
    archive = pipeline.archive_name
    job_id_expr = "${SLURM_JOB_ID:-${JOB_ID:-${PBS_JOBID:-${LSB_JOBID:-}}}}"

    lines = [
        "#!/usr/bin/env bash",
        *directives,
        f"# x2c job: pipeline {pipeline.name} {pipeline.version}, runtime {runtime}"
        + (f", rendered by x2c {x2c_version}" if x2c_version else "")
        + ". Do not edit.",
        f"# Writes job.log, {jd.RUN_INFO}, outputs/, {jd.MANIFEST}, the archive, then "
        f"{jd.EXIT_CODE} last.",
        *_clean_env_lines(pipeline, posixpath.join(job_dir, jd.JOB_SCRIPT)),
        "set -euo pipefail",
        "umask 027",  # imaging data: no access for other users of the cluster
        f"x2c_dir={_q(job_dir)}",
        "x2c_finish() {",
        "  local rc=$?",
        "  trap - EXIT",
        "  set +e",
        '  printf \'ended_at=%s\\nexit_code=%s\\n\' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$rc" '
        f'>>"$x2c_dir/{jd.RUN_INFO}"',
        f'  printf \'%s\\n\' "$rc" >"$x2c_dir/{jd.EXIT_CODE}.tmp.$$" && '
        f'mv -f "$x2c_dir/{jd.EXIT_CODE}.tmp.$$" "$x2c_dir/{jd.EXIT_CODE}"',
        '  exit "$rc"',
        "}",
        "trap x2c_finish EXIT",
        "# a scheduler's cancel or time limit sends TERM: end through the EXIT trap with 143",
        "trap 'exit 143' TERM",
        "trap 'exit 130' INT",
        'x2c_die() { local rc=$1; shift; printf \'x2c: %s\\n\' "$*" >&2; exit "$rc"; }',
        'cd -- "$x2c_dir"',
        f"rm -f -- {jd.EXIT_CODE}",
        f"exec >>{jd.JOB_LOG} 2>&1",
        f"x2c_job={job_id_expr}",
        "# a task of a SLURM array is known to squeue and sacct as <array id>_<task index>",
        '[ -z "${SLURM_ARRAY_JOB_ID:-}" ] || '
        'x2c_job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}"',
        "printf 'started_at=%s\\nnode=%s\\njob_id=%s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" "
        f'"$(hostname)" "$x2c_job" >{jd.RUN_INFO}',
    ]
    if path_prepend:
        lines.append(f'export PATH={_q(":".join(path_prepend))}:"$PATH"')
    lines += [
        "printf 'x2c: %s\\n' "
        + _q(f"pipeline {pipeline.name} {pipeline.version} for experiment {experiment}"),
        f"mkdir -p -- {jd.OUTPUTS}",
    ]
    first = primary_input(pipeline, inputs)
    if first is not None:
        first = posixpath.join(jd.INPUTS, first)
        lines.append(
            f"test -s {_q(first)} || x2c_die {EXIT_INPUT_MISSING} "
            + _q(f"the staged input {first} is missing or empty; stage the inputs again")
        )
    if resume is not None and pipeline.resume is not None:
        lines += _unpack_lines(posixpath.join(jd.INPUTS, resume), pipeline.resume.into)
    # Steps run from outputs/ (bare) or /x2c/outputs (containers); the checks glob from there.
    lines.append(f"cd -- {jd.OUTPUTS}")
    for number, argv in enumerate(steps, start=1):
        full = container_argv(
            runtime,
            image,
            argv,
            binds=all_binds,
            env=pipeline.environment,
            workdir=CONTAINER_OUTPUTS,
            oci_runtime=oci_runtime,
        )
        lines += [
            f"printf 'x2c: step {number}: %s\\n' {_q(shlex.join(full))}",
            f"{_qargv(full)} || x2c_die $? " + _q(f"step {number} ({argv[0]}) failed"),
        ]
    lines += _check_and_pack_lines(pipeline, archive)
    script = "\n".join(lines) + "\n"
    check_script(script, forbidden)
    return script


CLEAN_ENV_FLAG = "--x2c-clean-env"
"""The argument the job script passes to itself once it runs in its clean environment."""


def _clean_env_lines(pipeline: Pipeline, script_path: str) -> list[str]:
    """Start the script again under ``env -i`` with only the allow-list of
    :mod:`x2c.jobenv` (issue 9): whatever the scheduler passed on (the orchestrator's
    ``XNAT_PASS``, a token) is gone from the job and from its processes' environ. The new
    process is the job-directory copy of this script, whatever path the scheduler ran."""
    return [
        "# Start again from a clean environment: only these names reach the job.",
        f'if [ "${{1:-}}" != {CLEAN_ENV_FLAG} ]; then',
        "  x2c_keep=()",
        "  while IFS= read -r -d '' x2c_kv; do",
        f"    case ${{x2c_kv%%=*}} in {case_pattern(pipeline.passenv)}) "
        'x2c_keep+=("$x2c_kv") ;; esac',
        "  done < <(env -0)",
        f'  exec env -i "${{x2c_keep[@]}}" "$BASH" -- {_q(script_path)} {CLEAN_ENV_FLAG}',
        "fi",
    ]


_UNSAFE = (
    "declared outputs hold symbolic links that leave the job directory or lead nowhere "
    "(see above); nothing was packed"
)


def _link_check_lines() -> list[str]:
    """Symbolic links among the declared outputs (issue 9): one that leads outside the job
    directory, or nowhere, fails the job naming it (exit 65); one that stays inside is packed
    as the file it points to. Archives never hold links."""
    return [
        "x2c_links=0",
        "x2c_unsafe=0",
        "x2c_inside() {  # x2c_inside RESOLVED: is it inside the job directory?",
        '  case $1 in "$x2c_real"/*) return 0 ;; *) return 1 ;; esac',
        "}",
        "x2c_unsafe_link() {  # x2c_unsafe_link OUTPUT RESOLVED",
        '  if [ -z "$2" ]; then',
        "    printf 'x2c: output %s is a symbolic link that leads nowhere\\n' \"$1\" >&2",
        "  else",
        "    printf 'x2c: output %s is a symbolic link to %s, outside the job directory\\n' "
        '"$1" "$2" >&2',
        "  fi",
        "  x2c_unsafe=1",
        "}",
        "while IFS= read -r -d '' f; do",
        '  if [ "$x2c_links" = 0 ]; then',
        f"    command -v realpath >/dev/null || x2c_die {EXIT_TOOL_MISSING} "
        + _q("realpath (GNU coreutils) is needed on the node to check symbolic links in outputs"),
        '    x2c_real=$(realpath -e -- "$x2c_dir")',
        "  fi",
        "  x2c_links=$((x2c_links + 1))",
        '  x2c_r=$(realpath -e -- "$f" 2>/dev/null) || x2c_r=',
        '  [ -n "$x2c_r" ] && x2c_inside "$x2c_r" || x2c_unsafe_link "${f#./}" "$x2c_r"',
        'done < <(find "${x2c_files[@]/#/./}" -type l -print0)',
        f'[ "$x2c_unsafe" = 0 ] || x2c_die {EXIT_OUTPUTS_MISSING} ' + _q(_UNSAFE),
    ]


def _check_and_pack_lines(pipeline: Pipeline, archive: str) -> list[str]:
    lines = [
        "shopt -s nullglob",
        "x2c_files=()",
        "x2c_missing=0",
        "declare -A x2c_seen=()",
        "x2c_require() {  # x2c_require PATTERN MATCH...: every pattern needs non-empty matches",
        "  local pattern=$1 f; shift",
        "  if [ $# -eq 0 ]; then",
        "    printf 'x2c: declared output %s matched no file in outputs/\\n' \"$pattern\" >&2",
        "    x2c_missing=1; return 0",
        "  fi",
        '  for f in "$@"; do',
        '    if [ ! -e "$f" ]; then',
        "      printf 'x2c: declared output %s is missing from outputs/\\n' \"$f\" >&2; "
        "x2c_missing=1",
        '    elif [ -d "$f" ] && [ -z "$(ls -A -- "$f")" ]; then',
        "      printf 'x2c: declared output %s is an empty directory\\n' \"$f\" >&2; x2c_missing=1",
        '    elif [ ! -d "$f" ] && [ ! -s "$f" ]; then',
        "      printf 'x2c: declared output %s is an empty file\\n' \"$f\" >&2; x2c_missing=1",
        '    elif [ -z "${x2c_seen[$f]:-}" ]; then',
        '      x2c_seen[$f]=1; x2c_files+=("$f")',
        "    fi",
        "  done",
        "}",
    ]
    # Patterns are validated (Pipeline.outputs) to hold only letters, digits and . _ - / * ? [ ]
    # !, so they are pasted unquoted for the shell to glob; the quoted copy is for the message.
    lines += [f"x2c_require {_q(pattern)} {pattern}" for pattern in pipeline.outputs]
    lines += [
        f'[ "$x2c_missing" = 0 ] || x2c_die {EXIT_OUTPUTS_MISSING} '
        + _q("declared outputs are missing or empty (see above); nothing was packed"),
    ]
    lines += _link_check_lines()
    lines += [
        f'x2c_archive="$x2c_dir"/{_q(archive)}',
        'rm -f -- "$x2c_archive" "$x2c_archive.tmp"',
    ]
    # Expand directory matches into their files, once each, sorted, relative to outputs/;
    # symbolic links (all checked above to stay inside the job directory) are followed.
    lines += [
        "x2c_packed=()",
        "while IFS= read -r -d '' f; do x2c_packed+=(\"${f#./}\"); done < <(",
        '  find -L "${x2c_files[@]/#/./}" -type f -print0 | LC_ALL=C sort -zu)',
    ]
    lines += [
        # a link to a directory inside the job directory was followed: every file reached
        # through it must resolve inside too (one realpath call for all of them)
        'if [ "$x2c_links" != 0 ]; then',
        "  x2c_i=0",
        "  while IFS= read -r -d '' x2c_r; do",
        '    x2c_inside "$x2c_r" || x2c_unsafe_link "${x2c_packed[$x2c_i]}" "$x2c_r"',
        "    x2c_i=$((x2c_i + 1))",
        '  done < <(realpath -z -m -- "${x2c_packed[@]}")',
        f'  [ "$x2c_unsafe" = 0 ] || x2c_die {EXIT_OUTPUTS_MISSING} ' + _q(_UNSAFE),
        "fi",
    ]
    if pipeline.archive_format == "zip":
        lines += [
            f"command -v python3 >/dev/null || x2c_die {EXIT_TOOL_MISSING} "
            + _q(
                "python3 is needed on the node to write a zip archive; install it or use "
                "archive_format tar.gz"
            ),
            'python3 - "$x2c_archive.tmp" "${x2c_packed[@]}" <<\'X2C_ZIP_PACKER\'',
            _ZIP_PACKER.rstrip("\n"),
            "X2C_ZIP_PACKER",
        ]
    else:
        # -h and --hard-dereference: a symbolic link (checked above) or a file reached by two
        # names is packed as a plain file, never as a link (collect refuses archived links)
        lines.append('tar --hard-dereference -czhf "$x2c_archive.tmp" -- "${x2c_packed[@]}"')
    lines += [
        'mv -f -- "$x2c_archive.tmp" "$x2c_archive"',
        f'md5sum -- "${{x2c_packed[@]}}" >"$x2c_dir/{jd.MANIFEST}"',
        f"printf 'archive=%s\\narchive_md5=%s\\narchive_size=%s\\n' {_q(archive)} "
        '"$(md5sum <"$x2c_archive" | cut -d" " -f1)" "$(wc -c <"$x2c_archive" | tr -d " ")" '
        f'>>"$x2c_dir/{jd.RUN_INFO}"',
        "printf 'x2c: packed %s files into %s\\n' \"${#x2c_packed[@]}\" " + _q(archive),
    ]
    return lines
