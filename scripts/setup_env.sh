#!/usr/bin/env bash
# Creates (once) the virtual environment the tests and benchmarks run in. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed"
want="$(cat requirements.txt requirements-test.txt | sha1sum | cut -c1-12)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torchvision is imported by ComfyUI; these two versions install together from the local index.
  "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
  "$VENV/bin/pip" install -q -r requirements.txt -r requirements-test.txt
  echo "$want" > "$stamp"
fi
