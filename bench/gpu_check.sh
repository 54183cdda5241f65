#!/usr/bin/env bash
# On a CUDA machine: start convzoo with CONVZOO_PROVIDERS=cuda, classify one image, print the providers in use.
# Needs onnxruntime-gpu in place of onnxruntime (pip install onnxruntime-gpu) and an NVIDIA driver.
# Usage: bench/gpu_check.sh [python]   (default: .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${1:-}"
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
exec "$py" bench/gpu_check.py
