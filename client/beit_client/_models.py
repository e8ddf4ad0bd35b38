"""Results the SDK returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from beit_preprocessing import PreprocessingConfig

__all__ = ["ModelInfo", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    index: int


@dataclass(frozen=True)
class ModelInfo:
    """What the served checkpoint is: the `beit` model config's parameters (written by beit-build)."""

    checkpoint: str
    num_labels: int
    embedding_size: int
    max_batch_size: int
    random_weights: bool
    multi_label: bool
    preprocessing: PreprocessingConfig
