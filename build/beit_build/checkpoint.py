"""Loading a checkpoint (hub id or local folder) the way a user's download is loaded: `from_pretrained`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    BaseImageProcessor,
    BeitForImageClassification,
    Data2VecVisionForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
)

from beit_build.errors import CheckpointNotFoundError, UnsupportedCheckpointError

logger = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("beit", "data2vec-vision")
SUPPORTED_CLASSES = (BeitForImageClassification, Data2VecVisionForImageClassification)


@dataclass(frozen=True)
class Checkpoint:
    name: str
    model: PreTrainedModel
    image_processor: BaseImageProcessor


def load_checkpoint(source: str | Path, *, name: str | None = None) -> Checkpoint:
    """`name` is what the repository records as the checkpoint (the hub id or folder by default)."""
    name = name if name is not None else str(source)
    logger.info("loading checkpoint %s", name)
    _check_loadable(source, name)
    config = AutoConfig.from_pretrained(source)
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedCheckpointError(
            f"{name} is a {config.model_type!r} checkpoint (architectures {config.architectures}); "
            f"beit-build supports image classifiers of model type {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    # Eager attention: the relative position bias is an additive mask, which the exporters handle only there.
    model = AutoModelForImageClassification.from_pretrained(source, attn_implementation="eager").eval()
    if not isinstance(model, SUPPORTED_CLASSES):
        raise UnsupportedCheckpointError(
            f"{name} loads as {type(model).__name__}; beit-build supports "
            f"{', '.join(cls.__name__ for cls in SUPPORTED_CLASSES)}"
        )
    # The PIL backend is the one the server's numpy/Pillow preprocessing reproduces bit for bit.
    image_processor = AutoImageProcessor.from_pretrained(source, backend="pil")
    logger.info(
        "loaded %s: %d layers, hidden size %d, %d labels",
        type(model).__name__,
        config.num_hidden_layers,
        config.hidden_size,
        config.num_labels,
    )
    return Checkpoint(name=name, model=model, image_processor=image_processor)


def _check_loadable(source: str | Path, name: str) -> None:
    """Clear errors for what transformers reports confusingly: a missing checkpoint, and a timm one
    (transformers would suggest installing timm, which needs torchvision; it marks a timm config.json
    as model type "timm_wrapper")."""
    try:
        raw_config, _ = PretrainedConfig.get_config_dict(source)
    except OSError as e:
        raise CheckpointNotFoundError(f"cannot load {name}: {e}") from e
    if raw_config.get("model_type", "timm_wrapper") == "timm_wrapper" and "architecture" in raw_config:
        raise UnsupportedCheckpointError(
            f"{name} is a timm checkpoint ({raw_config['architecture']}); beit-build loads transformers "
            "checkpoints (BeitForImageClassification, Data2VecVisionForImageClassification): use the "
            "transformers release of the same weights, e.g. microsoft/beit-base-patch16-224"
        )
