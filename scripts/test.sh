#!/usr/bin/env bash
# The whole test suite, from nothing: install, lint, type-check, check the import layers, bring up
# the test cluster (sshd + SLURM on loopback), run pytest, take the cluster down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate

echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== import contracts"; lint-imports

# take the cluster down afterwards only if this run brought it up
if ! bash scripts/testcluster.sh status >/dev/null 2>&1; then
  bash scripts/testcluster.sh up
  trap 'bash scripts/testcluster.sh down' EXIT
fi
echo "== pytest"
python -m pytest "$@"
