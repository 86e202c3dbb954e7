#!/usr/bin/env bash
# The prepared GPU check (issue 18): one command on a CUDA machine, a few minutes, writes
# results/bench/gpu.json. Without CUDA it says so, runs the CPU part and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
exec "$PY" scripts/gpu_check.py "$@"
