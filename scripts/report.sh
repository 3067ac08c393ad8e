#!/usr/bin/env bash
# Sets up the environment, runs the benchmarks and the evaluation sweeps (scripts/report.py) and
# writes a markdown report with plots (default: report/).
#   bash scripts/report.sh [--host VERSION] [report.py arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
take_host_option "$@"
use_host "$HOST"
exec "$PYTHON" scripts/report.py "${ARGS[@]}"
