#!/usr/bin/env bash
# Sets up the environment and runs the benchmarks: inversion speed and quality (bench/inversion.py),
# variations (bench/variations.py) and Prompt-to-Prompt overhead (bench/p2p_overhead.py). No
# arguments: CPU, tiny models. --full: the variations and P2P benchmarks on CUDA with an
# SD1.5-shaped UNet at 512², 50 steps. ComfyUI is looked up as for the
# tests (COMFYUI_PATH, the ComfyUI holding this pack, ~/ComfyUI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
python="${VENV:-.venv}/bin/python"
"$python" bench/inversion.py
"$python" bench/variations.py "$@"
"$python" bench/p2p_overhead.py "$@"
