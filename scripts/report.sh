#!/usr/bin/env bash
# Sets up the environment, runs the benchmarks and the evaluation sweeps (scripts/report.py) and
# writes a markdown report with plots (default: report/). Arguments go to scripts/report.py.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec "${VENV:-.venv}/bin/python" scripts/report.py "$@"
