#!/usr/bin/env bash
# Sets up the environment (once) and runs the whole test suite.
#   bash scripts/test.sh [--host VERSION|none] [pytest args...]
# --host VERSION runs against the ComfyUI snapshot ../shared/hosts/ComfyUI-vVERSION.tar.gz (without
# one, a pinned version cloned from git: scripts/env.sh) in a virtual environment of its own
# (.venv-VERSION); --host none runs with no ComfyUI (the tests that
# need one are skipped, with that reason). Without --host, ComfyUI is looked up through
# COMFYUI_PATH, then the ComfyUI whose custom_nodes/ holds this pack, then ~/ComfyUI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
take_host_option "$@"
use_host "$HOST"
exec "$PYTHON" -m pytest -q "${ARGS[@]}"
