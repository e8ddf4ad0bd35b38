#!/usr/bin/env bash
# model.onnx -> model.plan with trtexec: FP16, LayerNormalization in FP32, one optimization profile over the
# whole dynamic-batching range. Arguments come from plan_args.py (the repository's own config and graph).
# The plan is moved into place only when trtexec's own report of the engine shows every LayerNormalization
# layer in FP32 (layer_precisions.py): trtexec silently ignores --layerPrecisions names that match no layer.
# Usage: build_plan.sh [MODEL_REPOSITORY]   (default /workspace/output/model_repository)
set -euo pipefail

here=$(dirname "$0")
repository=${1:-/workspace/output/model_repository}
model_dir=$repository/beit_model
onnx=$model_dir/1/model.onnx
plan=$model_dir/1/model.plan
# Beside the plan's model directory, not in its version directory: what the engine does, for anyone to read.
layer_info=$model_dir/model.plan.layers.json

if [[ ! -f $onnx ]]; then
    echo "build_plan: $onnx not found; run 'docker compose run --rm build' first" >&2
    exit 1
fi

# Captured first so a plan_args failure stops the script (set -e does not see into process substitution).
args_text=$(python3 "$here/plan_args.py" --config "$model_dir/configs/tensorrt.pbtxt" --onnx "$onnx")
mapfile -t plan_args <<<"$args_text"

# Built under a temporary name: Triton must never find a half-written or unchecked plan.
partial=$plan.partial
trap 'rm -f "$partial"' EXIT
trtexec --onnx="$onnx" --saveEngine="$partial" "${plan_args[@]}" \
    --memPoolSize=workspace:4096 --skipInference \
    --profilingVerbosity=detailed --exportLayerInfo="$layer_info"
python3 "$here/layer_precisions.py" --onnx "$onnx" --layer-info "$layer_info"
mv "$partial" "$plan"
echo "build_plan: wrote $plan"
