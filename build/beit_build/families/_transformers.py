"""Image classifiers from transformers, loaded with `from_pretrained` as a user's hub download would be."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoImageProcessor, AutoModelForImageClassification, PreTrainedModel

from beit_build.errors import PreprocessingError, UnsupportedCheckpointError
from beit_build.families.base import Checkpoint, CheckpointFamily, LayerScale
from beit_build.labels import IMAGENET22K_NUM_LABELS, imagenet22k_labels, one_line
from beit_preprocessing import PreprocessingConfig

logger = logging.getLogger(__name__)


class TransformersFamily(CheckpointFamily):
    """One `*ForImageClassification` class of transformers whose layers end their residual branches in
    `lambda * Linear(x)` and whose attention takes a relative position bias (BEiT and its copies)."""

    def __init__(
        self,
        *,
        model_type: str,
        model_class: type[PreTrainedModel],
        layer_class: type[nn.Module],
        bias_class: type[nn.Module],
        scaled_linears: Callable[[Any], tuple[nn.Linear, nn.Linear]],
        folded_value: float | None,
    ) -> None:
        self.name = model_type
        self.model_class = model_class
        self.layer_class = layer_class
        self.bias_class = bias_class
        self.scaled_linears = scaled_linears
        self.folded_value = folded_value

    def recognizes(self, config: Mapping[str, Any]) -> bool:
        return config.get("model_type") == self.name

    def load(self, source: str | Path, name: str) -> Checkpoint:
        # Eager attention: the relative position bias is an additive mask, which only eager exports.
        model = AutoModelForImageClassification.from_pretrained(source, attn_implementation="eager").eval()
        if not isinstance(model, self.model_class):
            raise UnsupportedCheckpointError(
                f"{name} loads as {type(model).__name__}; beit-build exports {self.model_class.__name__} "
                f"for model type {self.name!r}"
            )
        config = model.config
        # The PIL backend is the one the server's numpy/Pillow preprocessing reproduces bit for bit.
        processor = AutoImageProcessor.from_pretrained(source, backend="pil")  # type: ignore[no-untyped-call]
        preprocessing = _preprocessing(processor.to_dict(), config.image_size)
        logger.info(
            "loaded %s: %d layers, hidden size %d, %d labels",
            type(model).__name__,
            config.num_hidden_layers,
            config.hidden_size,
            config.num_labels,
        )
        return Checkpoint(
            name=name,
            family=self,
            model=model,
            preprocessing=preprocessing,
            labels=tuple(_labels(config.num_labels, config.id2label or {})),
            multi_label=config.problem_type == "multi_label_classification",
            embedding_size=config.hidden_size,
            patch_size=config.patch_size,
        )

    def layer_scales(self, model: nn.Module) -> list[LayerScale]:
        scales = []
        for layer in model.modules():
            if isinstance(layer, self.layer_class):
                for attribute, linear in zip(
                    ("lambda_1", "lambda_2"), self.scaled_linears(layer), strict=True
                ):
                    if isinstance(getattr(layer, attribute), torch.Tensor):
                        scales.append(LayerScale(layer, attribute, linear, self.folded_value))
        return scales

    def relative_position_bias_types(self) -> tuple[type[nn.Module], ...]:
        return (self.bias_class,)

    def outputs(self, model: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # pooler_output: the mean of the patch tokens after layernorm, the input of the classifier head.
        classifier: Any = model  # transformers' heads are attributes its types do not declare
        embedding = classifier.base_model(pixel_values).pooler_output
        return embedding, classifier.classifier(embedding)


def _preprocessing(processor: Mapping[str, Any], image_size: int | list[int]) -> PreprocessingConfig:
    """The image processor's settings; its output must be the model's own image_size."""
    try:
        preprocessing = PreprocessingConfig.from_image_processor_dict(processor)
        resolution = preprocessing.output_size
    except ValueError as e:
        raise PreprocessingError(f"unsupported image processor settings: {e}") from e
    expected = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size, image_size)
    if resolution != expected:
        raise PreprocessingError(
            f"the image processor outputs {resolution[0]}x{resolution[1]} images, "
            f"the model's config.image_size is {expected[0]}x{expected[1]}"
        )
    return preprocessing


def _labels(num_labels: int | None, id2label: Mapping[Any, str]) -> list[str]:
    """The sorted ImageNet-22k lemmas for a 21,841-class head, whose Hub id2label is shifted from id 9205 on
    (two entries were deleted from a 21,843-entry list without re-indexing); otherwise id2label."""
    if num_labels == IMAGENET22K_NUM_LABELS:
        logger.info("21,841-class head: using the sorted ImageNet-22k labels, not the Hub id2label")
        return imagenet22k_labels()
    return [one_line(str(id2label[i])) for i in range(num_labels or 0)]
