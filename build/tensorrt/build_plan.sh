#!/usr/bin/env bash
# model.onnx -> model.plan with trtexec: FP16, LayerNormalization in FP32, one optimization profile over the
# whole dynamic-batching range. Arguments come from plan_args.py (the repository's own config and graph).
# Usage: build_plan.sh [MODEL_REPOSITORY]   (default /workspace/model_repository)
set -euo pipefail

repository=${1:-/workspace/model_repository}
model_dir=$repository/beit_model
onnx=$model_dir/1/model.onnx
plan=$model_dir/1/model.plan

if [[ ! -f $onnx ]]; then
    echo "build_plan: $onnx not found; run 'docker compose run --rm build' first" >&2
    exit 1
fi

# Captured first so a plan_args failure stops the script (set -e does not see into process substitution).
args_text=$(python3 "$(dirname "$0")/plan_args.py" --config "$model_dir/configs/tensorrt.pbtxt" --onnx "$onnx")
mapfile -t plan_args <<<"$args_text"

# Built under a temporary name: Triton must never find a half-written plan.
trtexec --onnx="$onnx" --saveEngine="$plan.partial" "${plan_args[@]}" \
    --memPoolSize=workspace:4096 --skipInference
mv "$plan.partial" "$plan"
echo "build_plan: wrote $plan"
