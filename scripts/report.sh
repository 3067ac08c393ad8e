#!/usr/bin/env bash
# Sets up the environment, runs the benchmarks and the evaluation sweeps (scripts/report.py) and
# writes a markdown report with plots (default: report/).
#   bash scripts/report.sh [--host VERSION] [report.py arguments...]
# The arguments are checked (with the system's python3) before anything is set up.
set -euo pipefail
# No cd: the paths given are relative to where you are.
source "$(dirname "$0")/env.sh"
take_host_option "$@"
if [[ " ${ARGS[*]} " == *" --help "* ]] || [[ " ${ARGS[*]} " == *" -h "* ]]; then
  exec python3 "$PACK_ROOT/scripts/report.py" --help
fi
python3 "$PACK_ROOT/scripts/report.py" "${ARGS[@]}" --check
use_host "$HOST"
exec "$PYTHON" "$PACK_ROOT/scripts/report.py" "${ARGS[@]}"
