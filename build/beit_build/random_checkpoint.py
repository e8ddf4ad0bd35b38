"""Randomly initialized BEiT checkpoints, for building and serving without downloading weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from transformers import BeitConfig, BeitForImageClassification, BeitImageProcessorPil
from transformers.image_utils import PILImageResampling

logger = logging.getLogger(__name__)

_COMMON: dict[str, Any] = dict(
    image_size=224,
    patch_size=16,
    use_relative_position_bias=True,
    use_mean_pooling=True,
)
# tiny matches tests/checkpoints.py; base has microsoft/beit-base-patch16-224-pt22k-ft22k's architecture and
# head, large microsoft/beit-large-patch16-224's (their config.json on the Hub).
RANDOM_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        layer_scale_init_value=0.1,
        num_labels=10,
    ),
    "base": dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        layer_scale_init_value=0.1,
        num_labels=21_841,
    ),
    "large": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        layer_scale_init_value=1e-5,
        num_labels=1000,
    ),
}


def random_checkpoint_name(size: str) -> str:
    return f"random-{size}"


def random_config(size: str) -> BeitConfig:
    if size not in RANDOM_ARCHITECTURES:
        raise ValueError(f"random size must be one of {', '.join(RANDOM_ARCHITECTURES)}, not {size!r}")
    return BeitConfig(**_COMMON, **RANDOM_ARCHITECTURES[size])


def save_random_checkpoint(size: str, directory: Path) -> Path:
    """Save a random BEiT of `size` with BEiT's default preprocessing, to be loaded like a downloaded one."""
    logger.warning("building a RANDOMLY INITIALIZED BEiT-%s: its predictions are meaningless", size)
    BeitForImageClassification(random_config(size)).save_pretrained(directory)
    BeitImageProcessorPil(
        do_resize=True,
        size={"height": 224, "width": 224},
        resample=PILImageResampling.BILINEAR,
        do_center_crop=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(directory)
    return directory
