"""Relative position bias computed once, for the export's fixed resolution.

Traced with a dynamic batch axis, each layer's bias (index building, an identity interpolation of the bias
table, a gather) stays in the ONNX graph and runs on every call: ~400 nodes that never constant-fold. The bias
depends only on the input resolution, so each bias module (the types its family names) is replaced by a
constant of its output.
"""

from __future__ import annotations

import torch
from torch import nn


class FixedRelativePositionBias(nn.Module):
    """Stands in for a relative-position-bias module; valid only at the resolution it was computed for."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("bias", bias.detach().clone())

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.get_buffer("bias")


def precompute_relative_position_bias(
    model: nn.Module,
    bias_types: tuple[type[nn.Module], ...],
    resolution: tuple[int, int],
    patch_size: int,
) -> int:
    """Replace, in place, every module of `bias_types` by its output for `resolution` (height, width);
    returns how many were replaced."""
    window_size = (resolution[0] // patch_size, resolution[1] // patch_size)
    replaced = 0
    with torch.no_grad():
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, bias_types):
                    setattr(parent, name, FixedRelativePositionBias(child(window_size)))
                    replaced += 1
    return replaced
