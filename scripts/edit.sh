#!/usr/bin/env bash
# The main job: a Prompt-to-Prompt edit run headlessly on your checkpoint, with all the set-up a
# fresh machine needs (the environment of scripts/env.sh, a ComfyUI snapshot when --host is given).
#   bash scripts/edit.sh [--host VERSION] [WORKFLOW.json] --checkpoint PATH/model.safetensors [--out DIR] [--set NAME=VALUE]...
# The workflow defaults to example_workflows/p2p_replace.json and the images go to out/; the other
# arguments are scripts/run_workflow.py's (--set steps=20, --set seed=1, --cpu, ...). They are
# checked (with the system's python3, no torch needed) before anything is set up.
set -euo pipefail
# No cd: the paths given are relative to where you are (out/ too).
source "$(dirname "$0")/env.sh"
take_host_option "$@"
set -- "${ARGS[@]}"
workflow="$PACK_ROOT/example_workflows/p2p_replace.json"
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
  workflow="$1"
  shift
fi
if [[ " $* " == *" --help "* ]] || [[ " $* " == *" -h "* ]]; then
  exec python3 "$PACK_ROOT/scripts/run_workflow.py" --help
fi
if [[ " $* " != *" --checkpoint"[\ =]* ]] && [[ " $* " != *" ckpt_name="* ]]; then
  echo "edit.sh: --checkpoint is missing; give your SD1.x/SD2.x/SDXL checkpoint, e.g. --checkpoint ~/models/v1-5-pruned-emaonly-fp16.safetensors" >&2
  exit 2
fi
python3 "$PACK_ROOT/scripts/run_workflow.py" "$workflow" --out out "$@" --check
use_host "$HOST"
exec "$PYTHON" "$PACK_ROOT/scripts/run_workflow.py" "$workflow" --out out "$@"
