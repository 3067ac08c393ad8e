#!/usr/bin/env bash
# The main job: a Prompt-to-Prompt edit run headlessly on your checkpoint, with all the set-up a
# fresh machine needs (the environment of scripts/env.sh, a ComfyUI snapshot when --host is given).
#   bash scripts/edit.sh [--host VERSION] [WORKFLOW.json] --checkpoint PATH/model.safetensors [--out DIR] [--set NAME=VALUE]...
# The workflow defaults to example_workflows/p2p_replace.json and the images go to out/; the other
# arguments are scripts/run_workflow.py's (--set steps=20, --set seed=1, --cpu, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
take_host_option "$@"
use_host "$HOST"
set -- "${ARGS[@]}"
workflow=example_workflows/p2p_replace.json
if [ $# -gt 0 ] && [[ "$1" == *.json ]]; then
  workflow="$1"
  shift
fi
exec "$PYTHON" scripts/run_workflow.py "$workflow" --out out "$@"
