"""The checks Triton's backends make when they load beit_model, against the exported model.onnx, for the
pinned release (Triton 26.06). The GPU variants never load here (the embedded server has neither backend),
so these rules stand in for the load a GPU deployment would do; each names the source it follows.

onnxruntime backend (triton-inference-server/onnxruntime_backend, branch r26.06):
- src/onnxruntime.cc lines 1409-1431: the config declares exactly as many inputs as the model has.
- src/onnxruntime.cc lines 1704-1708, 1811-1815 with backend src/backend_common.cc CheckAllowedModelInput
  and CheckAllowedModelOutput (lines 332-380, r26.02, the newest branch stored): every config tensor is one
  of the model's, by name.
- src/onnxruntime.cc lines 1710-1726, 1817-1833: the config's data_type is the model's.
- src/onnxruntime.cc lines 1765-1768 (inputs, compare_exact false) and 1847-1850 (outputs, compare_exact
  true), src/onnxruntime_utils.cc CompareDimsSupported lines 491-558: with max_batch_size > 0 the model's
  first dim must be -1; then the model's shape must have as many dims as [-1] + config dims, and each dim the
  model fixes must be the config's (inputs), or every dim must be equal, -1 included (outputs). A config -1
  never matches a model's fixed dim: the certain failure of the 24.10 template (dims [3, -1, -1]).

tensorrt backend (triton-inference-server/tensorrt_backend, branch r26.06):
- src/instance_state.cc ValidateIO lines 2212-2279: at most as many config inputs as engine inputs; every
  config tensor named after an engine tensor of the same direction.
- src/instance_state.cc lines 3053-3066 and 3290-3303: the config's data_type is the engine tensor's.
- src/instance_state.cc lines 3075-3078 and 3308-3311 with src/tensorrt_utils.cc CompareDimsSupported lines
  193-266 (compare_exact false for both): [-1] + config dims has the engine's rank, and a dim is compared only
  where neither side is -1.
  The engine's tensors are the ONNX graph's: build_plan.sh builds the plan from this model.onnx with trtexec,
  whose ONNX parser keeps tensor names, the dynamic batch axis (-1) and the graph's I/O types (UINT8
  pixels in, FP32 out; no --inputIOFormats/--outputIOFormats is given).

Triton core (triton-inference-server/core, branch r26.06):
- src/model.cc lines 113-127: a label_filename is read from inside the model directory, one label per line.
  src/label_provider.cc GetLabel lines 38-52 answers "" past the file's end, so a short file silently
  labels the last classes with nothing: the label count must be the output's size.

The python backend (the embedded variant) checks nothing against a model file at load; its model.py runs the
same model.onnx through ONNX Runtime, so the onnxruntime backend's rules are applied to it too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto
from tritonclient.grpc import model_config_pb2

from beit_repository.model_config import ModelConfig

DataType = model_config_pb2.DataType
# onnxruntime_backend r26.06 src/onnxruntime_utils.cc ModelConfigDataTypeToOnnxDataType (lines 370-410);
# tensorrt_backend r26.06 src/tensorrt_utils.cc ConvertTrtTypeToDataType (the ONNX parser maps FLOAT to
# kFLOAT, FLOAT16 to kHALF, ...), restricted to the types an exported BEiT can carry.
ONNX_TO_CONFIG = {
    TensorProto.FLOAT: DataType.TYPE_FP32,
    TensorProto.FLOAT16: DataType.TYPE_FP16,
    TensorProto.BFLOAT16: DataType.TYPE_BF16,
    TensorProto.DOUBLE: DataType.TYPE_FP64,
    TensorProto.INT64: DataType.TYPE_INT64,
    TensorProto.INT32: DataType.TYPE_INT32,
    TensorProto.INT8: DataType.TYPE_INT8,
    TensorProto.UINT8: DataType.TYPE_UINT8,
    TensorProto.BOOL: DataType.TYPE_BOOL,
}
WILDCARD = -1


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: int
    """A model_config_pb2.DataType value."""
    shape: tuple[int, ...]
    """Full shape, batch axis included; -1 where the model leaves a dim dynamic."""


@dataclass(frozen=True)
class ModelIO:
    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]


def onnx_io(path: Path) -> ModelIO:
    """The graph's inputs (initializers excluded, as ONNX Runtime lists them) and outputs."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}

    def tensor(value: onnx.ValueInfoProto) -> Tensor:
        dims = value.type.tensor_type.shape.dim
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else WILDCARD for dim in dims)
        return Tensor(value.name, ONNX_TO_CONFIG[value.type.tensor_type.elem_type], shape)

    return ModelIO(
        {v.name: tensor(v) for v in graph.input if v.name not in initializers},
        {v.name: tensor(v) for v in graph.output},
    )


def _shape(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _type(data_type: int) -> str:
    return str(DataType.Name(data_type))


def onnxruntime_errors(config: ModelConfig, model: ModelIO) -> list[str]:
    """What the onnxruntime backend of 26.06 refuses, as its messages say it."""
    errors = []
    name = config.name
    expected = sum(1 for tensor in config.input if not tensor.optional) + len(config.batch_input)
    if len(model.inputs) != expected:
        errors.append(
            f"unable to load model '{name}', configuration expects {expected} inputs, model provides "
            f"{len(model.inputs)}"
        )
    for direction, declared, found, exact in (
        ("input", config.input, model.inputs, False),
        ("output", config.output, model.outputs, True),
    ):
        for io in declared:
            if io.name not in found:
                errors.append(
                    f"unexpected inference {direction} '{io.name}', allowed {direction}s are: "
                    + ", ".join(sorted(found))
                )
                continue
            tensor = found[io.name]
            if tensor.data_type != io.data_type:
                errors.append(
                    f"unable to load model '{name}', configuration expects datatype {_type(io.data_type)} "
                    f"for {direction} '{io.name}', model provides {_type(tensor.data_type)}"
                )
            dims = list(io.reshape.shape) if io.HasField("reshape") else list(io.dims)
            errors.extend(_compare_dims_onnxruntime(name, io.name, tensor.shape, dims, config, exact))
    return errors


def _compare_dims_onnxruntime(
    model: str, tensor: str, model_shape: tuple[int, ...], dims: list[int], config: ModelConfig, exact: bool
) -> list[str]:
    if config.max_batch_size > 0:
        if not model_shape or model_shape[0] != WILDCARD:
            return [
                f"model '{model}', tensor '{tensor}': for the model to support batching the shape should "
                "have at least 1 dimension and the first dimension must be -1; but shape expected by the "
                f"model is {_shape(list(model_shape))}"
            ]
        dims = [WILDCARD, *dims]
    same = len(model_shape) == len(dims) and all(
        model_dim == dim
        for model_dim, dim in zip(model_shape, dims, strict=False)
        if exact or model_dim != -1
    )
    if same:
        return []
    return [
        f"model '{model}', tensor '{tensor}': the model expects {len(model_shape)} dimensions (shape "
        f"{_shape(list(model_shape))}) but the model configuration specifies {len(dims)} dimensions "
        f"(shape {_shape(dims)})"
    ]


def tensorrt_errors(config: ModelConfig, engine: ModelIO) -> list[str]:
    """What the tensorrt backend of 26.06 refuses, for an engine with these tensors."""
    errors = []
    name = config.name
    if len(engine.inputs) < len(config.input):
        errors.append(
            f"unable to load model '{name}', configuration expects {len(config.input)} inputs, model "
            f"provides at most {len(engine.inputs)}"
        )
    for direction, declared, found in (
        ("input", config.input, engine.inputs),
        ("output", config.output, engine.outputs),
    ):
        for io in declared:
            if io.name not in found:
                errors.append(
                    f"unexpected inference {direction} '{io.name}', allowed {direction}s are: "
                    + ", ".join(sorted(found))
                )
                continue
            tensor = found[io.name]
            if tensor.data_type != io.data_type:
                errors.append(
                    f"unexpected datatype {_type(tensor.data_type)} for inference {direction} '{io.name}', "
                    f"expecting {_type(io.data_type)} for {name}"
                )
            dims = [WILDCARD, *io.dims] if config.max_batch_size > 0 else list(io.dims)
            same = len(tensor.shape) == len(dims) and all(
                model_dim == dim
                for model_dim, dim in zip(tensor.shape, dims, strict=False)
                if model_dim != WILDCARD and dim != WILDCARD
            )
            if not same:
                errors.append(
                    f"model '{name}', tensor '{io.name}': the model expects {len(tensor.shape)} dimensions "
                    f"(shape {_shape(list(tensor.shape))}) but the model configuration specifies "
                    f"{len(dims)} dimensions (shape {_shape(dims)})"
                )
    return errors


def label_errors(config: ModelConfig, model_dir: Path) -> list[str]:
    """A label file per labeled output, inside the model directory, with one label per output element."""
    errors = []
    for io in config.output:
        if not io.label_filename:
            continue
        path = (model_dir / io.label_filename).resolve()
        if not path.is_relative_to(model_dir.resolve()):
            errors.append(f"label file path '{path}' for output '{io.name}' is outside model directory")
            continue
        if not path.is_file():
            errors.append(f"label file '{path}' for output '{io.name}' does not exist")
            continue
        count = len(path.read_text(encoding="utf-8").splitlines())
        if any(dim < 1 for dim in io.dims) or count != math.prod(io.dims):
            errors.append(
                f"output '{io.name}' has dims {_shape(list(io.dims))} but {io.label_filename} holds {count} "
                "labels: Triton labels classes past the file's end with nothing"
            )
    return errors


def load_errors(config: ModelConfig, model_dir: Path, onnx_path: Path) -> list[str]:
    """Everything the backend that `config` names, and Triton's core, would refuse at load."""
    model = onnx_io(onnx_path)
    if config.backend == "tensorrt":
        io_errors = tensorrt_errors(config, model)
    elif config.backend in {"onnxruntime", "python"}:
        io_errors = onnxruntime_errors(config, model)
    else:
        raise ValueError(f"{config.name}: no load rules for backend {config.backend!r}")
    return io_errors + label_errors(config, model_dir)
