#!/usr/bin/env bash
# Sets up the environment and runs the benchmarks: inversion speed and quality (bench/inversion.py),
# variations (bench/variations.py), Prompt-to-Prompt overhead (bench/p2p_overhead.py) and the
# qk edit's overhead on Flux and SD3 (bench/mmdit_overhead.py; --full-block by hand).
#   bash scripts/bench.sh [--host VERSION] [--full]
# --host as for scripts/test.sh (default: COMFYUI_PATH, the ComfyUI holding this pack, ~/ComfyUI).
# No --full: CPU, tiny models. --full: the variations and P2P benchmarks on CUDA with an
# SD1.5-shaped UNet at 512², 50 steps.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
take_host_option "$@"
for arg in "${ARGS[@]}"; do
  if [ "$arg" != --full ]; then
    echo "bench.sh: unknown argument '$arg'; the options are --host VERSION and --full" >&2
    exit 2
  fi
done
use_host "$HOST"
"$PYTHON" bench/inversion.py
"$PYTHON" bench/variations.py "${ARGS[@]}"
"$PYTHON" bench/p2p_overhead.py "${ARGS[@]}"
"$PYTHON" bench/mmdit_overhead.py
