#!/usr/bin/env bash
# The prepared GPU benchmark (bench/gpu_bench.py): resnet50 on CUDA, plain run() against IOBinding, FP32
# against FP16 with its parity, and convzoo over HTTP with CONVZOO_PROVIDERS=cuda. About 2 minutes.
# Needs an NVIDIA driver, onnxruntime-gpu in place of onnxruntime (pip install onnxruntime-gpu), and torch
# for the one-time resnet50 export (random weights). Writes docs/bench-gpu.json and docs/bench-gpu.md.
# Usage: bench/gpu_bench.sh [python] [--seconds S] [--dry-run-on-cpu]
set -euo pipefail
cd "$(dirname "$0")/.."
py=""
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then py="$1"; shift; fi
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
exec "$py" -m bench.gpu_bench "$@"
