#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite. ComfyUI is looked up through
# COMFYUI_PATH, then the ComfyUI that holds this pack, then ~/ComfyUI; without one, the tests
# that need it are skipped with that reason and the pure-torch tests still run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec "${VENV:-.venv}/bin/python" -m pytest -q "$@"
