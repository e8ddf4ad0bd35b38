"""Randomly initialized checkpoints at the real architectures, for building and serving without downloading
weights: saved as the hub publishes them (config.json, weights, preprocessor_config.json) and loaded back
through `from_pretrained` by the family that recognizes them, like a download."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import BeitImageProcessorPil, PreTrainedConfig
from transformers.image_utils import PILImageResampling

from beit_build.families import beit, data2vec_vision
from beit_build.families._transformers import TransformersFamily

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RandomArchitecture:
    """A checkpoint's architecture, head and preprocessing, built by its family's model class."""

    family: TransformersFamily
    config: Mapping[str, Any]
    resample: PILImageResampling
    copies: str
    """What it has the architecture of."""


_COMMON: dict[str, Any] = dict(
    image_size=224,
    patch_size=16,
    use_relative_position_bias=True,
    use_mean_pooling=True,
)
_LARGE: dict[str, Any] = dict(
    _COMMON,
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    layer_scale_init_value=1e-5,
    num_labels=1000,
)
# Architectures, heads and preprocessing from the checkpoints' config.json and preprocessor_config.json on
# the Hub (shared/FACTS.md, "The checkpoints"); tiny matches tests/checkpoints.py.
RANDOM_ARCHITECTURES: dict[str, RandomArchitecture] = {
    "tiny": RandomArchitecture(
        beit.FAMILY,
        dict(
            _COMMON,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            layer_scale_init_value=0.1,
            num_labels=10,
        ),
        PILImageResampling.BILINEAR,
        "a tiny BEiT",
    ),
    "base": RandomArchitecture(
        beit.FAMILY,
        dict(
            _COMMON,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            layer_scale_init_value=0.1,
            num_labels=21_841,
        ),
        PILImageResampling.BILINEAR,
        "microsoft/beit-base-patch16-224-pt22k-ft22k",
    ),
    "large": RandomArchitecture(
        beit.FAMILY, _LARGE, PILImageResampling.BILINEAR, "microsoft/beit-large-patch16-224"
    ),
    # BEiT-large's dims and head in data2vec-vision's classes, with bicubic resizing.
    "data2vec-vision-large": RandomArchitecture(
        data2vec_vision.FAMILY, _LARGE, PILImageResampling.BICUBIC, "facebook/data2vec-vision-large-ft1k"
    ),
}


def random_checkpoint_name(size: str) -> str:
    return f"random-{size}"


def random_architecture(size: str) -> RandomArchitecture:
    if size not in RANDOM_ARCHITECTURES:
        raise ValueError(f"random size must be one of {', '.join(RANDOM_ARCHITECTURES)}, not {size!r}")
    return RANDOM_ARCHITECTURES[size]


def random_config(size: str) -> PreTrainedConfig:
    """The transformers config of `size`: its family's (BeitConfig, Data2VecVisionConfig)."""
    architecture = random_architecture(size)
    config_class = architecture.family.model_class.config_class
    assert config_class is not None, architecture.family.model_class
    return config_class(**architecture.config)


def random_image_processor(size: str) -> BeitImageProcessorPil:
    """BEiT's preprocessing as the copied checkpoint publishes it: resize to 224x224, no crop, x/255,
    mean = std = 0.5, with its resampling filter."""
    return BeitImageProcessorPil(
        do_resize=True,
        size={"height": 224, "width": 224},
        resample=random_architecture(size).resample,
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def save_random_checkpoint(size: str, directory: Path) -> Path:
    """Save a random checkpoint of `size`, to be loaded like a downloaded one."""
    architecture = random_architecture(size)
    logger.warning(
        "building a RANDOMLY INITIALIZED %s (the architecture of %s): its predictions are meaningless",
        architecture.family.model_class.__name__,
        architecture.copies,
    )
    architecture.family.model_class(random_config(size)).save_pretrained(directory)
    random_image_processor(size).save_pretrained(directory)
    return directory
