"""What beit-build needs to know about a family of checkpoints, and what loading one gives it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from beit_preprocessing import PreprocessingConfig


@dataclass(frozen=True)
class LayerScale:
    """One residual branch's `lambda * Linear(x)`: the layer holding lambda, its attribute name, the Linear it
    scales, and what the layer must multiply by once lambda is folded into that Linear."""

    layer: nn.Module
    attribute: str
    linear: nn.Linear
    folded_value: float | None


@dataclass(frozen=True)
class Checkpoint:
    """A loaded image classifier with everything the repository records about it."""

    name: str
    family: CheckpointFamily
    model: nn.Module
    preprocessing: PreprocessingConfig
    labels: tuple[str, ...]
    multi_label: bool
    embedding_size: int
    patch_size: int

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def resolution(self) -> tuple[int, int]:
        """(height, width) the network takes: the preprocessing's output size."""
        return self.preprocessing.output_size


class CheckpointFamily(ABC):
    """A kind of checkpoint beit-build can export: how to recognize and load it, and its export quirks."""

    name: str

    @abstractmethod
    def recognizes(self, config: Mapping[str, Any]) -> bool:
        """Whether the checkpoint's config.json (as a dict) is one of this family's."""

    @abstractmethod
    def load(self, source: str | Path, name: str) -> Checkpoint:
        """Load the checkpoint at `source` (hub id or folder), recorded as `name`."""

    @abstractmethod
    def layer_scales(self, model: nn.Module) -> list[LayerScale]:
        """Every layer scale still present in `model`."""

    @abstractmethod
    def relative_position_bias_types(self) -> tuple[type[nn.Module], ...]:
        """Module types computing a relative position bias from the input resolution alone."""

    @abstractmethod
    def outputs(self, model: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding, logits): the pooled image embedding that feeds the classifier head, and its output."""
