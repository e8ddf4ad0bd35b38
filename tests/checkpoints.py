"""Randomly initialized BEiT checkpoints saved as a user's hub download would be: config, weights, image
processor config. Everything under test loads them through `from_pretrained`, the path a hub id takes."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BeitConfig,
    BeitForImageClassification,
    BeitImageProcessorPil,
    Data2VecVisionConfig,
    Data2VecVisionForImageClassification,
)
from transformers.image_utils import PILImageResampling

TINY_ARCHITECTURE = dict(
    patch_size=16,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    use_relative_position_bias=True,
    use_mean_pooling=True,
    layer_scale_init_value=0.1,
)


def save_tiny_checkpoint(
    directory: Path,
    *,
    num_labels: int = 10,
    data2vec: bool = False,
    multi_label: bool = False,
    resample: PILImageResampling = PILImageResampling.BILINEAR,
    image_size: int = 224,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
) -> Path:
    torch.manual_seed(seed)
    config_class, model_class = (
        (Data2VecVisionConfig, Data2VecVisionForImageClassification)
        if data2vec
        else (BeitConfig, BeitForImageClassification)
    )
    id2label = id2label if id2label is not None else {i: f"class {i}" for i in range(num_labels)}
    config = config_class(
        **TINY_ARCHITECTURE,
        image_size=image_size,
        num_labels=num_labels,
        id2label=id2label,
        label2id={label: i for i, label in id2label.items()},
        problem_type="multi_label_classification" if multi_label else None,
    )
    model = model_class(config).eval()
    # Random heads give near-uniform scores; spread the logits so the top-k order is well defined.
    with torch.no_grad():
        model.classifier.weight.normal_(std=2.0)
    model.save_pretrained(directory)
    BeitImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=resample,
        do_center_crop=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    ).save_pretrained(directory)
    return directory
