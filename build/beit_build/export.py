"""The ONNX graph Triton serves: PIXEL_VALUES (uint8) in; LOGITS, PROBABILITIES and EMBEDDING out."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from beit_build.families import Checkpoint
from beit_build.layer_scale import fold_layer_scale, layer_scale_report
from beit_build.onnx_files import save_model
from beit_build.relative_position_bias import precompute_relative_position_bias
from beit_preprocessing import PreprocessingConfig, exact_normalization_steps, normalization_table
from beit_repository.names import NETWORK_OUTPUTS, PIXEL_VALUES

logger = logging.getLogger(__name__)

# 17 is the first opset with LayerNormalization as one op, which TensorRT can keep in FP32 under FP16.
OPSET = 17


class PixelNormalization(nn.Module):
    """uint8 pixels in, the image processor's rescale and normalize out, with the same float32 bits as the
    processor on every pipeline: the preprocessor hands on a quarter of float32's bytes. Three elementwise
    float32 operations where they are exact (beit_preprocessing's `exact_normalization_steps`: every
    checkpoint we know), else a lookup of each value in the [3, 256] table (exact by construction; ONNX
    Runtime's Gather takes 1.4 ms per 224x224 image, the operations 0.13 ms)."""

    def __init__(self, preprocessing: PreprocessingConfig) -> None:
        super().__init__()
        steps = exact_normalization_steps(preprocessing)
        self.lookup = steps is None
        if steps is None:
            table = normalization_table(preprocessing).reshape(-1).copy()
            self.register_buffer("table", torch.from_numpy(table))
            # Channel c's value v is entry c * 256 + v; int32 indices, which TensorRT's Gather takes natively.
            self.register_buffer("offsets", (torch.arange(3, dtype=torch.int32) * 256).view(1, 3, 1, 1))
        else:
            self.register_buffer("divisor", torch.tensor(steps.divisor, dtype=torch.float32))
            self.register_buffer("mean", torch.tensor(steps.mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(steps.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.lookup:
            return self.get_buffer("table")[pixels.to(torch.int32) + self.get_buffer("offsets")]
        scaled = pixels.to(torch.float32) / self.get_buffer("divisor")
        return (scaled - self.get_buffer("mean")) / self.get_buffer("std")


class NetworkOutputs(nn.Module):
    """A checkpoint's classifier as the three tensors the repository serves, in NETWORK_OUTPUTS order; from
    the image processor's float pixels, or from uint8 pixels with a `normalization` (what is exported)."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        model: nn.Module | None = None,
        normalization: PixelNormalization | None = None,
    ) -> None:
        super().__init__()
        self.model = checkpoint.model if model is None else model
        self.family = checkpoint.family
        self.multi_label = checkpoint.multi_label
        # A child of this module, not a wrapper around it, so the network's nodes keep their names
        # (/beit/layers.0/...), which the TensorRT step's --layerPrecisions entries name.
        self.normalization = normalization

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pixel_values = pixels if self.normalization is None else self.normalization(pixels)
        embedding, logits = self.family.outputs(self.model, pixel_values)
        probabilities = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return logits, probabilities, embedding


def prepare_for_export(checkpoint: Checkpoint) -> NetworkOutputs:
    """A copy of the checkpoint's model with layer scale folded and relative position bias fixed for its
    resolution, taking uint8 pixels."""
    family, model = checkpoint.family, checkpoint.model
    report = layer_scale_report(model, family.layer_scales(model))
    log = logger.warning if report.fp16_unsafe else logger.info
    log(
        "layer scale |lambda| in [%s, %s], max |weight| %.3g%s",
        _format(report.min_abs_layer_scale),
        _format(report.max_abs_layer_scale),
        report.max_abs_weight,
        " (outside FP16's normal range)" if report.fp16_unsafe else "",
    )
    prepared = copy.deepcopy(model).eval()
    folded = fold_layer_scale(family.layer_scales(prepared))
    biases = precompute_relative_position_bias(
        prepared, family.relative_position_bias_types(), checkpoint.resolution, checkpoint.patch_size
    )
    logger.info(
        "folded %d layer scales into their linear layers; fixed %d relative position biases", folded, biases
    )
    return NetworkOutputs(checkpoint, prepared, PixelNormalization(checkpoint.preprocessing))


def export_onnx(
    module: nn.Module, path: Path, resolution: tuple[int, int], *, external_data: bool = False
) -> list[Path]:
    """TorchScript export with only the batch axis dynamic (the resolution is the checkpoint's), into `path`
    alone in a directory of its own (onnx_files.staged_model). The tensors go to one external data file
    beside it when `external_data` is set, or when they exceed protobuf's 2 GiB; returns that file, if any."""
    example = torch.zeros(2, 3, *resolution, dtype=torch.uint8)
    with torch.no_grad():
        outputs = module(example)
    output_dims = {
        name: list(output.shape[1:]) for name, output in zip(NETWORK_OUTPUTS, outputs, strict=True)
    }
    dynamic_axes = {name: {0: "batch"} for name in (PIXEL_VALUES, *NETWORK_OUTPUTS)}
    with warnings.catch_warnings():
        # The tracer warns about Python-side shape arithmetic that is constant at a fixed resolution, and the
        # TorchScript exporter about its own deprecation; neither changes the graph.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[PIXEL_VALUES],
            output_names=list(NETWORK_OUTPUTS),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    return _declare_output_dims(path, output_dims, external_data=external_data)


def _declare_output_dims(path: Path, output_dims: dict[str, list[int]], *, external_data: bool) -> list[Path]:
    """The exporter leaves some output axes symbolic (EMBEDDING's width is named after a LayerNormalization);
    every axis but the batch is fixed by the checkpoint, and Triton and TensorRT should see it so."""
    model = onnx.load(str(path), load_external_data=False)
    for output in model.graph.output:
        for dim, size in zip(output.type.tensor_type.shape.dim[1:], output_dims[output.name], strict=True):
            dim.dim_value = size
    return save_model(model, path, external_data=external_data)


def onnx_node_count(path: Path) -> int:
    return len(onnx.load(str(path), load_external_data=False).graph.node)


def graph_dims(path: Path) -> dict[str, list[int]]:
    """Each graph input's and output's dims after the batch axis, e.g. PIXEL_VALUES: [3, 224, 224]: what the
    model configs must declare (the onnxruntime backend accepts a config dim of -1 only where the model's
    own dim is dynamic)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    dims = {}
    for value in [*graph.input, *graph.output]:
        shape = value.type.tensor_type.shape.dim[1:]
        if any(not dim.HasField("dim_value") for dim in shape):
            raise ValueError(f"{path}: {value.name} has a dynamic dim besides the batch axis")
        dims[value.name] = [dim.dim_value for dim in shape]
    return dims


def takes_uint8_pixels(path: Path) -> bool:
    """Whether the graph takes uint8 pixels (PixelNormalization): builds from before took float32 pixels,
    which today's preprocessor no longer sends."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return [value.type.tensor_type.elem_type for value in graph.input] == [onnx.TensorProto.UINT8]


def _format(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"
