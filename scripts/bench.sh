#!/usr/bin/env bash
# Sets up the environment and runs the Prompt-to-Prompt overhead benchmark (bench/p2p_overhead.py).
# No arguments: CPU, tiny model. --full: CUDA, SD1.5-shaped UNet at 512², 50 steps. ComfyUI is
# looked up as for the tests (COMFYUI_PATH, the ComfyUI holding this pack, ~/ComfyUI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec "${VENV:-.venv}/bin/python" bench/p2p_overhead.py "$@"
