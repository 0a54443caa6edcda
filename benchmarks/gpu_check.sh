#!/usr/bin/env bash
# Measure every GPU path in one run of under 4 minutes (see benchmarks/gpu_check.py):
#     bash benchmarks/gpu_check.sh OUT_DIR                        # a GPU machine
#     bash benchmarks/gpu_check.sh OUT_DIR --device cpu --small   # the same on a CPU, under a minute
# Needs python3 and PyTorch only: the repository is put on PYTHONPATH here, nothing is installed.
# PYTHON=... picks the interpreter (default python3). Writes OUT_DIR/gpu_check.json.
set -euo pipefail
# Options may come before or after OUT_DIR (gpu_check.py's own parser reads them).
if [ $# -lt 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh [--device cpu] [--small] [--parts forward,...] OUT_DIR" >&2
    exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" "$root/benchmarks/gpu_check.py" "$@"
