#!/usr/bin/env bash
# The demo, from nothing: install what x2c needs (scripts/bootstrap.sh: Debian packages, .venv,
# podman and its demo image), then `x2c demo`: a local XNAT-compatible server with a few
# sessions, each processed on this machine through the real Prefect flows, results uploaded
# with provenance, and a table of what happened. Arguments go to `x2c demo` (e.g. --serve).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/x2c demo "$@"
