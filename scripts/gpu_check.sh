#!/usr/bin/env bash
# GPU checks, one prepared run on a lent GPU machine (15 minutes of device time in all):
# the CUDA attention backends against the fp64 reference, then the attention benchmark in bf16.
# That machine has its own Python with a CUDA torch and no network: partgen is installed
# without dependencies, and only tests that need torch alone run there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
$PY -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
PYTHONUNBUFFERED=1 $PY -m pytest -m gpu tests/nn/test_attention_gpu.py -q -p no:cacheprovider -rs 2>&1 | tee "$OUT/pytest-gpu.txt"
PYTHONUNBUFFERED=1 $PY scripts/bench_part_attention.py --device cuda --dtype bfloat16 --tokens 131072 --parts 8 \
    --heads 8 --head-dim 64 --backward --backends flash_attn,partgen_cuda,xformers,sdpa_loop,flex \
    --json "$OUT/bench-cuda-131072-p8.json"
