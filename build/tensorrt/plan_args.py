"""trtexec arguments for beit_model/1/model.plan, derived from the repository itself.

The plan's optimization profile and precision follow from two files, so they can never drift from them:

- configs/tensorrt.pbtxt: the batch range (1..max_batch_size) and the batch TensorRT tunes for (a preferred
  batch size of the dynamic batcher); the image size from beit-build's generated parameters when the ONNX
  input does not fix it;
- model.onnx: the input name and the LayerNormalization nodes, which are kept in FP32 while the rest runs in
  FP16 (LayerNorm overflow in FP16 wrecks ViT-family accuracy: TensorRT issues 2564, 3101, 2709, 4723).
  TensorRT's ONNX parser names each layer after its ONNX node, so node names are layer names.

Runs inside the TensorRT container: stdlib, onnx and tritonclient's model_config_pb2 only. Prints one
argument per line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2


class PlanArgsError(ValueError):
    pass


def load_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def batch_profile(config: model_config_pb2.ModelConfig) -> tuple[int, int, int]:
    """(min, opt, max) batch: the whole range the dynamic batcher can form.

    opt is the middle preferred batch size: TensorRT times its tactics at opt, and the batcher forms small
    batches under light load and full ones under heavy load.
    """
    if config.max_batch_size < 1:
        raise PlanArgsError("max_batch_size must be >= 1: the plan is built with a dynamic batch axis")
    preferred = sorted(
        size for size in config.dynamic_batching.preferred_batch_size if size <= config.max_batch_size
    )
    opt = preferred[(len(preferred) - 1) // 2] if preferred else config.max_batch_size
    return 1, opt, config.max_batch_size


def _parameter(config: model_config_pb2.ModelConfig, key: str) -> object:
    if key not in config.parameters:
        return None
    return json.loads(config.parameters[key].string_value)


def image_size(
    model: onnx.ModelProto, input_name: str, config: model_config_pb2.ModelConfig
) -> tuple[int, int]:
    """(height, width) of the network input: fixed in the ONNX graph, else the checkpoint's preprocessing."""
    (graph_input,) = (value for value in model.graph.input if value.name == input_name)
    dims = graph_input.type.tensor_type.shape.dim
    if len(dims) != 4:
        raise PlanArgsError(
            f"{input_name} must be [batch, 3, height, width], the ONNX graph has {len(dims)} dims"
        )
    height, width = dims[2].dim_value, dims[3].dim_value
    if height > 0 and width > 0:
        return height, width
    size = (
        _parameter(config, "crop_size")
        if _parameter(config, "do_center_crop")
        else _parameter(config, "size")
    )
    if isinstance(size, dict) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    raise PlanArgsError(
        f"the image size is neither fixed in the ONNX input {input_name} nor given as height/width by the "
        "generated parameters of the config (run beit-build first)"
    )


def layer_norm_layers(model: onnx.ModelProto) -> list[str]:
    nodes = [node for node in model.graph.node if node.op_type == "LayerNormalization"]
    if not nodes:
        raise PlanArgsError(
            "the ONNX graph has no LayerNormalization op, so LayerNorm cannot be kept in FP32: export at "
            "opset >= 17, where LayerNorm is one op (beit-build does)"
        )
    names = [node.name for node in nodes]
    unusable = [name for name in names if not name or "," in name or ":" in name]
    if unusable:
        raise PlanArgsError(f"LayerNormalization nodes need names without ',' or ':' for trtexec: {unusable}")
    return names


def trtexec_args(config_path: Path, onnx_path: Path) -> list[str]:
    config = load_config(config_path)
    if len(config.input) != 1:
        raise PlanArgsError(f"{config_path} must declare exactly one input")
    input_name = config.input[0].name
    model = onnx.load(str(onnx_path), load_external_data=False)
    if input_name not in {value.name for value in model.graph.input}:
        raise PlanArgsError(f"{onnx_path} has no input named {input_name} (the name in {config_path})")
    channels = config.input[0].dims[0]
    height, width = image_size(model, input_name, config)
    low, opt, high = batch_profile(config)

    def shape(batch: int) -> str:
        return f"{input_name}:{batch}x{channels}x{height}x{width}"

    fp32_layers = ",".join(f"{name}:fp32" for name in layer_norm_layers(model))
    return [
        f"--minShapes={shape(low)}",
        f"--optShapes={shape(opt)}",
        f"--maxShapes={shape(high)}",
        "--fp16",
        f"--layerPrecisions={fp32_layers}",
        # Without obey TensorRT treats layer precisions as hints and may still pick FP16 kernels.
        "--precisionConstraints=obey",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="beit_model/configs/tensorrt.pbtxt")
    parser.add_argument("--onnx", type=Path, required=True, help="beit_model/1/model.onnx")
    args = parser.parse_args(argv)
    try:
        lines = trtexec_args(args.config, args.onnx)
    except PlanArgsError as e:
        sys.stderr.write(f"plan_args: {e}\n")
        return 2
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
