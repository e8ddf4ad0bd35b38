"""Layer scale (BEiT's per-channel lambda_1/lambda_2) and its FP16 safety.

Each residual branch ends in `lambda * Linear(x)`. Trained lambdas can sit below FP16's smallest normal, where
TensorRT FP16 loses them to subnormals. Folding lambda into the Linear is exact in real arithmetic,
lambda * (W x + b) = (lambda W) x + lambda b, and within FP32 rounding in practice, so it is always applied.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.beit.modeling_beit import BeitLayer
from transformers.models.data2vec.modeling_data2vec_vision import Data2VecVisionLayer

logger = logging.getLogger(__name__)

FP16_SMALLEST_NORMAL = 6.104e-5
FP16_MAX = 65504.0


@dataclass(frozen=True)
class LayerScaleReport:
    min_abs_layer_scale: float | None
    max_abs_layer_scale: float | None
    max_abs_weight: float

    @property
    def fp16_unsafe(self) -> bool:
        tiny_scale = self.min_abs_layer_scale is not None and self.min_abs_layer_scale < FP16_SMALLEST_NORMAL
        return tiny_scale or self.max_abs_weight > FP16_MAX


def layer_scale_report(model: nn.Module) -> LayerScaleReport:
    scales = [scale.detach().abs() for scale, _ in _scaled_linears(model)]
    max_abs_weight = max(parameter.detach().abs().max().item() for parameter in model.parameters())
    if not scales:
        return LayerScaleReport(None, None, max_abs_weight)
    return LayerScaleReport(
        min_abs_layer_scale=min(scale.min().item() for scale in scales),
        max_abs_layer_scale=max(scale.max().item() for scale in scales),
        max_abs_weight=max_abs_weight,
    )


def fold_layer_scale(model: nn.Module) -> int:
    """Fold every layer scale into the Linear before it, in place, in FP32; returns how many were folded."""
    folded = 0
    with torch.no_grad():
        for layer in _scaled_layers(model):
            for name, linear in _scale_targets(layer):
                scale = getattr(layer, name)
                if not isinstance(scale, torch.Tensor):
                    continue
                scale = scale.detach().float()
                linear.weight.copy_(linear.weight.float() * scale[:, None])
                if linear.bias is not None:
                    linear.bias.copy_(linear.bias.float() * scale)
                delattr(layer, name)
                # BeitLayer multiplies by its lambda unconditionally (1.0 when absent); data2vec skips None.
                setattr(layer, name, 1.0 if isinstance(layer, BeitLayer) else None)
                folded += 1
    return folded


def _scaled_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, (BeitLayer, Data2VecVisionLayer))]


def _scale_targets(layer: nn.Module) -> list[tuple[str, nn.Linear]]:
    if isinstance(layer, BeitLayer):
        return [("lambda_1", layer.attention.o_proj), ("lambda_2", layer.mlp.fc2)]
    assert isinstance(layer, Data2VecVisionLayer)
    return [("lambda_1", layer.attention.output.dense), ("lambda_2", layer.output.dense)]


def _scaled_linears(model: nn.Module) -> list[tuple[torch.Tensor, nn.Linear]]:
    pairs = []
    for layer in _scaled_layers(model):
        for name, linear in _scale_targets(layer):
            scale = getattr(layer, name)
            if isinstance(scale, torch.Tensor):
                pairs.append((scale, linear))
    return pairs
