"""The ONNX graph Triton serves: PIXEL_VALUES in; LOGITS, PROBABILITIES, EMBEDDING out (DESIGN.md)."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn
from transformers import PreTrainedModel

from beit_build.layer_scale import fold_layer_scale, layer_scale_report
from beit_build.relative_position_bias import precompute_relative_position_bias

logger = logging.getLogger(__name__)

INPUT_NAME = "PIXEL_VALUES"
OUTPUT_NAMES = ("LOGITS", "PROBABILITIES", "EMBEDDING")
# 17 is the first opset with LayerNormalization as one op, which TensorRT can keep in FP32 under FP16.
OPSET = 17


class BeitOutputs(nn.Module):
    """An image classifier as the three tensors the repository serves."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.multi_label = model.config.problem_type == "multi_label_classification"

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # pooler_output: mean of the patch tokens after layernorm, the input of the classifier head.
        embedding = self.model.base_model(pixel_values).pooler_output
        logits = self.model.classifier(embedding)
        probabilities = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        return logits, probabilities, embedding


def prepare_for_export(model: PreTrainedModel, resolution: tuple[int, int]) -> BeitOutputs:
    """A copy of `model` with layer scale folded and relative position bias fixed for `resolution`."""
    report = layer_scale_report(model)
    log = logger.warning if report.fp16_unsafe else logger.info
    log(
        "layer scale |lambda| in [%s, %s], max |weight| %.3g%s",
        _format(report.min_abs_layer_scale),
        _format(report.max_abs_layer_scale),
        report.max_abs_weight,
        " (outside FP16's normal range)" if report.fp16_unsafe else "",
    )
    prepared = copy.deepcopy(model).eval()
    folded = fold_layer_scale(prepared)
    biases = precompute_relative_position_bias(prepared, resolution, prepared.config.patch_size)
    logger.info(
        "folded %d layer scales into their linear layers; fixed %d relative position biases", folded, biases
    )
    return BeitOutputs(prepared)


def export_onnx(module: nn.Module, path: Path, resolution: tuple[int, int]) -> None:
    """TorchScript export with only the batch axis dynamic (the resolution is the checkpoint's)."""
    example = torch.zeros(2, 3, *resolution)
    dynamic_axes = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        # The tracer warns about Python-side shape arithmetic that is constant at a fixed resolution, and the
        # TorchScript exporter about its own deprecation; neither changes the graph.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def onnx_node_count(path: Path) -> int:
    return len(onnx.load(str(path), load_external_data=False).graph.node)


def _format(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"
