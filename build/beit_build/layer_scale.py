"""Layer scale (BEiT's per-channel lambda_1/lambda_2) and its FP16 safety.

Each residual branch ends in `lambda * Linear(x)`. Trained lambdas can sit below FP16's smallest normal, where
TensorRT FP16 loses them to subnormals. Folding lambda into the Linear is exact in real arithmetic,
lambda * (W x + b) = (lambda W) x + lambda b, and within FP32 rounding in practice, so it is always applied.
The checkpoint's family says where its layer scales are (`CheckpointFamily.layer_scales`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from beit_build.families import LayerScale

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


def layer_scale_report(model: nn.Module, scales: Sequence[LayerScale]) -> LayerScaleReport:
    values = [_value(scale).abs() for scale in scales]
    max_abs_weight = max(parameter.detach().abs().max().item() for parameter in model.parameters())
    if not values:
        return LayerScaleReport(None, None, max_abs_weight)
    return LayerScaleReport(
        min_abs_layer_scale=min(value.min().item() for value in values),
        max_abs_layer_scale=max(value.max().item() for value in values),
        max_abs_weight=max_abs_weight,
    )


def fold_layer_scale(scales: Sequence[LayerScale]) -> int:
    """Fold every layer scale into the Linear it scales, in place, in FP32; returns how many were folded."""
    with torch.no_grad():
        for scale in scales:
            value = _value(scale).float()
            linear = scale.linear
            linear.weight.copy_(linear.weight.float() * value[:, None])
            if linear.bias is not None:
                linear.bias.copy_(linear.bias.float() * value)
            delattr(scale.layer, scale.attribute)
            setattr(scale.layer, scale.attribute, scale.folded_value)
    return len(scales)


def _value(scale: LayerScale) -> torch.Tensor:
    value = getattr(scale.layer, scale.attribute)
    assert isinstance(value, torch.Tensor), f"{scale.attribute} is already folded"
    return value.detach()
