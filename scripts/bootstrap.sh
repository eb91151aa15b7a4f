#!/usr/bin/env bash
# Install everything x2c and its tests need, from nothing, on Debian 12 as root (or with sudo):
# the Debian packages for the test cluster (OpenSSH, SLURM, munge, Grid Engine, podman),
# PostgreSQL for the Prefect stack (scripts/prefect-stack.sh) and a virtualenv in
# .venv with x2c and its dev tools. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

DEBS=(openssh-server openssh-client slurm-wlm munge gridengine-master gridengine-exec gridengine-client
      podman runc iproute2 uidmap postgresql)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: apt-get install ${missing[*]}"
  # Grid Engine's packages create their cell only when debconf says so (scripts/testcluster.sh)
  printf '%s\n' "gridengine-common shared/gridengineconfig boolean true" \
    "gridengine-common shared/gridenginecell string default" \
    "gridengine-common shared/gridenginemaster string $(hostname -f)" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.x2c-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi
$SUDO bash scripts/podman-setup.sh  # containers.conf drop-in + the demo image, built offline
