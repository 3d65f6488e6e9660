#!/usr/bin/env bash
# GPU checks, one prepared run on a lent GPU machine (15 minutes of device time in all):
# build the CUDA part-attention op, check every CUDA attention backend (partgen_cuda included)
# against the fp64 reference, then benchmark bf16 N=131072 P=8 against the peers present.
# That machine has its own Python with a CUDA torch and no network: partgen is installed
# without dependencies, and only tests that need torch alone run there. Any failed step makes the
# script exit 1 (after the others have run).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
mkdir -p "$OUT"
PY=${PY:-python3}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} PYTHONUNBUFFERED=1
export PARTGEN_CACHE=${PARTGEN_CACHE:-/tmp/partgen-cache}
failed=()
# step LOG CMD...: run CMD, its output to the screen and $OUT/LOG; a failure is recorded, the later
# steps still run (one device slot is precious), and the script exits 1 at the end
step() {
    local log=$1
    shift
    if ! "$@" 2>&1 | tee "$OUT/$log"; then
        echo "gpu_check: FAILED: $*" >&2
        failed+=("$log")
    fi
}
step gpu.txt nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step torch.txt $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
step install.txt $PY -m pip install -q --no-deps --no-build-isolation -e .
step build.txt $PY -m partgen.kernels
step pytest-gpu.txt $PY -m pytest -m gpu tests/nn/test_attention_gpu.py -q -p no:cacheprovider -rs -x
step bench.txt $PY scripts/bench_part_attention.py --device cuda --dtype bfloat16 --tokens 131072 --parts 8 \
    --heads 8 --head-dim 64 --backward --no-full --repeats 10 \
    --backends flash_attn,partgen_cuda,xformers,sdpa_loop,flex \
    --json "$OUT/bench-cuda-131072-p8.json"
if ((${#failed[@]})); then
    echo "gpu_check: ${#failed[@]} step(s) failed: ${failed[*]} (logs in $OUT)" >&2
    exit 1
fi
echo "gpu_check: every step passed (logs in $OUT)"
