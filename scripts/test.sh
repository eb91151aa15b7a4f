#!/usr/bin/env bash
# The whole test suite, from nothing: install, lint, type-check, check the import layers, bring up
# the test cluster (sshd + SLURM on loopback) and the Prefect stack (PostgreSQL, prefect server,
# workers; scripts/prefect-stack.sh), run pytest, take down what this run brought up.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
. .venv/bin/activate

echo "== ruff"; ruff check . && ruff format --check .
echo "== mypy"; mypy
echo "== import contracts"; lint-imports

# take the cluster and the Prefect stack down afterwards only if this run brought them up
cleanup=()
trap 'for c in "${cleanup[@]}"; do bash "scripts/$c.sh" down || true; done' EXIT
if ! bash scripts/testcluster.sh status >/dev/null 2>&1; then
  bash scripts/testcluster.sh up
  cleanup+=(testcluster)
fi
if ! bash scripts/prefect-stack.sh status >/dev/null 2>&1; then
  bash scripts/prefect-stack.sh up
  cleanup+=(prefect-stack)
fi
echo "== pytest"
python -m pytest "$@"
