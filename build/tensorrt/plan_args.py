"""trtexec arguments for beit_model/1/model.plan, derived from the built repository itself.

The plan's optimization profile and precision follow from two files, so they can never drift from them:

- configs/tensorrt.pbtxt as beit-build completed it: the input's exact dims (the checkpoint's image size) and
  the batch range (beit_repository.model_config.batch_profile: 1..max_batch_size, tuned at the middle
  preferred batch size), the same profile ONNX Runtime's TensorRT accelerator gets in config.pbtxt;
- model.onnx: the LayerNormalization nodes, which are kept in FP32 while the rest runs in FP16 (LayerNorm
  overflow in FP16 wrecks ViT-family accuracy: TensorRT issues 2564, 3101, 2709, 4723). TensorRT's ONNX
  parser names each layer after its ONNX node, so node names are layer names.

Runs inside the TensorRT container, beside a copy of beit_repository (stdlib, onnx and tritonclient's
model_config_pb2 only). Prints one argument per line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx

from beit_repository import model_config
from beit_repository.model_config import ModelConfigError


class PlanArgsError(ValueError):
    pass


def input_dims(config: model_config.ModelConfig) -> tuple[str, list[int]]:
    """The single input's name and dims after the batch axis, which must be exact: the built config's."""
    if len(config.input) != 1:
        raise PlanArgsError(f"{config.name} must declare exactly one input")
    (tensor,) = config.input
    dims = list(tensor.dims)
    if any(dim < 1 for dim in dims):
        raise PlanArgsError(
            f"{tensor.name} has dims {dims}: build the repository with beit-build first, which writes the "
            "exported graph's exact dims (the image size) into every config"
        )
    return tensor.name, dims


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
    try:
        config = model_config.read(config_path)
        low, opt, high = model_config.batch_profile(config)
    except ModelConfigError as e:
        raise PlanArgsError(str(e)) from e
    input_name, dims = input_dims(config)
    # trtexec reads the external weights from beside model.onnx; a copy that left them behind would fail
    # deep in the parser.
    for name in model_config.onnx_data_files(model_config.parameters(config)):
        if not (onnx_path.parent / name).is_file():
            raise PlanArgsError(f"{onnx_path} keeps its weights in {name} beside it, which is missing")
    model = onnx.load(str(onnx_path), load_external_data=False)
    if input_name not in {value.name for value in model.graph.input}:
        raise PlanArgsError(f"{onnx_path} has no input named {input_name} (the name in {config_path})")

    def shape(batch: int) -> str:
        return f"{input_name}:{'x'.join(str(d) for d in [batch, *dims])}"

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
