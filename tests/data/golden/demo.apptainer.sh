#!/usr/bin/env bash
# x2c job: pipeline demo 1.0.0, runtime apptainer. Do not edit.
# Writes job.log, run.env, outputs/, manifest.md5, the archive, then exit_code last.
# Start again from a clean environment: only these names reach the job.
if [ "${1:-}" != --x2c-clean-env ]; then
  x2c_keep=()
  while IFS= read -r -d '' x2c_kv; do
    case ${x2c_kv%%=*} in PATH|HOME|LANG|TMPDIR|USER|LOGNAME|JOB_ID|NSLOTS|NHOSTS|PE_HOSTFILE|SLURM_*|SGE_*|PBS_*|LSB_*|LSF_*) x2c_keep+=("$x2c_kv") ;; esac
  done < <(env -0)
  exec env -i "${x2c_keep[@]}" "$BASH" -- /scratch/x2c/demo/XNAT_E00001/job.sh --x2c-clean-env
fi
set -euo pipefail
umask 027
x2c_dir=/scratch/x2c/demo/XNAT_E00001
x2c_finish() {
  local rc=$?
  trap - EXIT
  set +e
  printf 'ended_at=%s\nexit_code=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$rc" >>"$x2c_dir/run.env"
  printf '%s\n' "$rc" >"$x2c_dir/exit_code.tmp.$$" && mv -f "$x2c_dir/exit_code.tmp.$$" "$x2c_dir/exit_code"
  exit "$rc"
}
trap x2c_finish EXIT
# a scheduler's cancel or time limit sends TERM: end through the EXIT trap with 143
trap 'exit 143' TERM
trap 'exit 130' INT
x2c_die() { local rc=$1; shift; printf 'x2c: %s\n' "$*" >&2; exit "$rc"; }
cd -- "$x2c_dir"
rm -f -- exit_code
exec >>job.log 2>&1
x2c_job=${SLURM_JOB_ID:-${JOB_ID:-${PBS_JOBID:-${LSB_JOBID:-}}}}
# a task of a SLURM array is known to squeue and sacct as <array id>_<task index>
[ -z "${SLURM_ARRAY_JOB_ID:-}" ] || x2c_job="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID:-0}"
printf 'started_at=%s\nnode=%s\njob_id=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" "$x2c_job" >run.env
printf 'x2c: %s\n' 'pipeline demo 1.0.0 for experiment XNAT_E00001'
mkdir -p -- outputs
test -s inputs/scans/2-T1w/NIFTI/T1w.nii.gz || x2c_die 66 'the staged input inputs/scans/2-T1w/NIFTI/T1w.nii.gz is missing or empty; stage the inputs again'
cd -- outputs
printf 'x2c: step 1: %s\n' 'apptainer exec --cleanenv --containall --bind /scratch/x2c/demo/XNAT_E00001/inputs:/x2c/inputs:ro --bind /scratch/x2c/demo/XNAT_E00001/outputs:/x2c/outputs --pwd /x2c/outputs docker://localhost/x2c-demo:latest python3 -m x2c.demo_pipeline /x2c/inputs/scans/2-T1w/NIFTI/T1w.nii.gz /x2c/outputs --label=sub-01'
apptainer exec --cleanenv --containall --bind /scratch/x2c/demo/XNAT_E00001/inputs:/x2c/inputs:ro --bind /scratch/x2c/demo/XNAT_E00001/outputs:/x2c/outputs --pwd /x2c/outputs docker://localhost/x2c-demo:latest python3 -m x2c.demo_pipeline /x2c/inputs/scans/2-T1w/NIFTI/T1w.nii.gz /x2c/outputs --label=sub-01 || x2c_die $? 'step 1 (python3) failed'
shopt -s nullglob
x2c_files=()
x2c_missing=0
declare -A x2c_seen=()
x2c_require() {  # x2c_require PATTERN MATCH...: every pattern needs non-empty matches
  local pattern=$1 f; shift
  if [ $# -eq 0 ]; then
    printf 'x2c: declared output %s matched no file in outputs/\n' "$pattern" >&2
    x2c_missing=1; return 0
  fi
  for f in "$@"; do
    if [ ! -e "$f" ]; then
      printf 'x2c: declared output %s is missing from outputs/\n' "$f" >&2; x2c_missing=1
    elif [ -d "$f" ] && [ -z "$(ls -A -- "$f")" ]; then
      printf 'x2c: declared output %s is an empty directory\n' "$f" >&2; x2c_missing=1
    elif [ ! -d "$f" ] && [ ! -s "$f" ]; then
      printf 'x2c: declared output %s is an empty file\n' "$f" >&2; x2c_missing=1
    elif [ -z "${x2c_seen[$f]:-}" ]; then
      x2c_seen[$f]=1; x2c_files+=("$f")
    fi
  done
}
x2c_require mask.nii.gz mask.nii.gz
x2c_require stats.json stats.json
[ "$x2c_missing" = 0 ] || x2c_die 65 'declared outputs are missing or empty (see above); nothing was packed'
x2c_links=0
x2c_unsafe=0
x2c_inside() {  # x2c_inside RESOLVED: is it inside the job directory?
  case $1 in "$x2c_real"/*) return 0 ;; *) return 1 ;; esac
}
x2c_unsafe_link() {  # x2c_unsafe_link OUTPUT RESOLVED
  if [ -z "$2" ]; then
    printf 'x2c: output %s is a symbolic link that leads nowhere\n' "$1" >&2
  else
    printf 'x2c: output %s is a symbolic link to %s, outside the job directory\n' "$1" "$2" >&2
  fi
  x2c_unsafe=1
}
while IFS= read -r -d '' f; do
  if [ "$x2c_links" = 0 ]; then
    command -v realpath >/dev/null || x2c_die 69 'realpath (GNU coreutils) is needed on the node to check symbolic links in outputs'
    x2c_real=$(realpath -e -- "$x2c_dir")
  fi
  x2c_links=$((x2c_links + 1))
  x2c_r=$(realpath -e -- "$f" 2>/dev/null) || x2c_r=
  [ -n "$x2c_r" ] && x2c_inside "$x2c_r" || x2c_unsafe_link "${f#./}" "$x2c_r"
done < <(find "${x2c_files[@]/#/./}" -type l -print0)
[ "$x2c_unsafe" = 0 ] || x2c_die 65 'declared outputs hold symbolic links that leave the job directory or lead nowhere (see above); nothing was packed'
x2c_archive="$x2c_dir"/DEMO_STATS.zip
rm -f -- "$x2c_archive" "$x2c_archive.tmp"
x2c_packed=()
while IFS= read -r -d '' f; do x2c_packed+=("${f#./}"); done < <(
  find -L "${x2c_files[@]/#/./}" -type f -print0 | LC_ALL=C sort -zu)
if [ "$x2c_links" != 0 ]; then
  x2c_i=0
  while IFS= read -r -d '' x2c_r; do
    x2c_inside "$x2c_r" || x2c_unsafe_link "${x2c_packed[$x2c_i]}" "$x2c_r"
    x2c_i=$((x2c_i + 1))
  done < <(realpath -z -m -- "${x2c_packed[@]}")
  [ "$x2c_unsafe" = 0 ] || x2c_die 65 'declared outputs hold symbolic links that leave the job directory or lead nowhere (see above); nothing was packed'
fi
command -v python3 >/dev/null || x2c_die 69 'python3 is needed on the node to write a zip archive; install it or use archive_format tar.gz'
python3 - "$x2c_archive.tmp" "${x2c_packed[@]}" <<'X2C_ZIP_PACKER'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
    for name in sys.argv[2:]:
        zf.write(name, name)
X2C_ZIP_PACKER
mv -f -- "$x2c_archive.tmp" "$x2c_archive"
md5sum -- "${x2c_packed[@]}" >"$x2c_dir/manifest.md5"
printf 'archive=%s\narchive_md5=%s\narchive_size=%s\n' DEMO_STATS.zip "$(md5sum <"$x2c_archive" | cut -d" " -f1)" "$(wc -c <"$x2c_archive" | tr -d " ")" >>"$x2c_dir/run.env"
printf 'x2c: packed %s files into %s\n' "${#x2c_packed[@]}" DEMO_STATS.zip
