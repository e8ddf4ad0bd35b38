"""timm's BEiT classifiers (`timm/beit_*` and `timm/beitv2_*` on the Hub, or a folder in timm's hub layout),
converted to transformers' BeitForImageClassification without importing timm.

timm's hub layout is `config.json` (`architecture`, `pretrained_cfg`, and from newer timm `model_args`) beside
`model.safetensors` and/or `pytorch_model.bin` holding `Beit.state_dict()` (timm/models/beit.py). The Hub's
configs carry no dims, so they are read off the weights; `model_args`, when present, must agree with them.
Every weight is renamed by one table (`KEY_TABLE`); weights it does not name are refused, never dropped.
Preprocessing is timm's eval transform for `pretrained_cfg` (`timm_preprocessing`).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from safetensors.torch import load_file
from torch import nn
from transformers import BeitConfig, BeitForImageClassification

from beit_build.errors import CheckpointNotFoundError, PreprocessingError, UnsupportedCheckpointError
from beit_build.families import beit
from beit_build.families.base import Checkpoint, CheckpointFamily, LayerScale
from beit_build.labels import (
    IMAGENET1K_NUM_LABELS,
    IMAGENET22K_NUM_LABELS,
    imagenet1k_labels,
    imagenet22k_labels,
    one_line,
)
from beit_preprocessing import PreprocessingConfig, SizeSpec

logger = logging.getLogger(__name__)

# timm's registered Beit architectures (timm/models/beit.py, timm 1.0): every tag of these is a classifier
# with per-block relative position bias, layer scale, mean pooling and fc_norm.
ARCHITECTURES = frozenset(
    {
        "beit_base_patch16_224",
        "beit_base_patch16_384",
        "beit_large_patch16_224",
        "beit_large_patch16_384",
        "beit_large_patch16_512",
        "beitv2_base_patch16_224",
        "beitv2_large_patch16_224",
    }
)
# What the hub download takes, in order of preference (timm's own loader prefers safetensors too).
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")

# timm weight name ({i}: block index) -> transformers BeitForImageClassification weight name. A tuple of three
# names splits timm's fused qkv weight into query, key and value along its rows. transformers' key projection
# has no bias: timm's k_bias is a zero buffer, never saved.
KEY_TABLE: tuple[tuple[str, str | tuple[str, str, str]], ...] = (
    ("cls_token", "beit.embeddings.cls_token"),
    ("patch_embed.proj.weight", "beit.embeddings.patch_embeddings.projection.weight"),
    ("patch_embed.proj.bias", "beit.embeddings.patch_embeddings.projection.bias"),
    ("blocks.{i}.norm1.weight", "beit.layers.{i}.layernorm_before.weight"),
    ("blocks.{i}.norm1.bias", "beit.layers.{i}.layernorm_before.bias"),
    (
        "blocks.{i}.attn.qkv.weight",
        (
            "beit.layers.{i}.attention.q_proj.weight",
            "beit.layers.{i}.attention.k_proj.weight",
            "beit.layers.{i}.attention.v_proj.weight",
        ),
    ),
    ("blocks.{i}.attn.q_bias", "beit.layers.{i}.attention.q_proj.bias"),
    ("blocks.{i}.attn.v_bias", "beit.layers.{i}.attention.v_proj.bias"),
    (
        "blocks.{i}.attn.relative_position_bias_table",
        "beit.layers.{i}.relative_position_bias.relative_position_bias_table",
    ),
    ("blocks.{i}.attn.proj.weight", "beit.layers.{i}.attention.o_proj.weight"),
    ("blocks.{i}.attn.proj.bias", "beit.layers.{i}.attention.o_proj.bias"),
    ("blocks.{i}.gamma_1", "beit.layers.{i}.lambda_1"),
    ("blocks.{i}.norm2.weight", "beit.layers.{i}.layernorm_after.weight"),
    ("blocks.{i}.norm2.bias", "beit.layers.{i}.layernorm_after.bias"),
    ("blocks.{i}.mlp.fc1.weight", "beit.layers.{i}.mlp.fc1.weight"),
    ("blocks.{i}.mlp.fc1.bias", "beit.layers.{i}.mlp.fc1.bias"),
    ("blocks.{i}.mlp.fc2.weight", "beit.layers.{i}.mlp.fc2.weight"),
    ("blocks.{i}.mlp.fc2.bias", "beit.layers.{i}.mlp.fc2.bias"),
    ("blocks.{i}.gamma_2", "beit.layers.{i}.lambda_2"),
    ("fc_norm.weight", "beit.pooler.layernorm.weight"),
    ("fc_norm.bias", "beit.pooler.layernorm.bias"),
    ("head.weight", "classifier.weight"),
    ("head.bias", "classifier.bias"),
)
_PATTERNS = tuple(
    (re.compile(re.escape(timm_key).replace(r"\{i\}", r"(?P<i>\d+)") + "$"), target)
    for timm_key, target in KEY_TABLE
)
# Buffers timm's checkpoint_filter_fn drops: the index is recomputed from the window size.
_DROPPED = re.compile(r"(.*\.)?relative_position_index$")
# Layouts of timm's Beit class that transformers' BEiT cannot express (or no published weights use), by a
# weight only they have.
_REFUSED_LAYOUTS = (
    (re.compile(r"pos_embed$"), "absolute position embeddings (use_abs_pos_emb=True)"),
    (
        re.compile(r"rel_pos_bias\."),
        "a relative position bias shared by all blocks (use_shared_rel_pos_bias)",
    ),
    (re.compile(r"norm\.(weight|bias)$"), "a norm before pooling (global_pool 'token' or use_fc_norm=False)"),
    (re.compile(r"blocks\.\d+\.mlp\.(fc1_g|fc1_x|norm)\."), "a SwiGLU or scale_mlp MLP"),
)
# model_args that change nothing at inference, and those whose only supported value is known.
_INFERENCE_NEUTRAL_ARGS = frozenset(
    {"drop_rate", "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "head_init_scale"}
)
_FIXED_ARGS: dict[str, Any] = {
    "in_chans": 3,
    "qkv_bias": True,
    "use_abs_pos_emb": False,
    "use_rel_pos_bias": True,
    "use_shared_rel_pos_bias": False,
    "swiglu_mlp": False,
    "scale_mlp": False,
    "global_pool": "avg",
    "use_fc_norm": None,
}
# timm.layers.LayerNorm's default, which every Beit norm uses.
LAYER_NORM_EPS = 1e-6

# timm.data defaults (timm/data/constants.py, config.py) for what a pretrained_cfg leaves out.
_DEFAULT_INPUT_SIZE = (3, 224, 224)
_DEFAULT_CROP_PCT = 0.875
_IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
# timm interpolation names -> the PIL filters torchvision's resize uses for them (pil_modes_mapping).
_PIL_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


class TimmBeitFamily(CheckpointFamily):
    """timm's Beit, converted on load to transformers' BeitForImageClassification, whose export quirks then
    apply (they are delegated to the `beit` family)."""

    name = "timm-beit"

    def __init__(self, target: CheckpointFamily) -> None:
        self._target = target

    def recognizes(self, config: Mapping[str, Any]) -> bool:
        # transformers reads a timm config.json (which has "architecture", not "architectures") as
        # model type "timm_wrapper".
        return config.get("model_type", "timm_wrapper") == "timm_wrapper" and (
            config.get("architecture") in ARCHITECTURES
        )

    def load(self, source: str | Path, name: str) -> Checkpoint:
        folder = Path(source) if Path(source).is_dir() else _download(str(source), name)
        return self.load_folder(folder, name)

    def load_folder(self, folder: Path, name: str) -> Checkpoint:
        """A folder in timm's hub layout: a local one, or the hub cache's snapshot of a download."""
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        state_dict = _read_weights(folder, name)
        dims = infer_dims(state_dict, name)
        _check_model_args(config.get("model_args") or {}, dims, name)
        pretrained_cfg = config.get("pretrained_cfg") or {}
        preprocessing = timm_preprocessing(pretrained_cfg)
        image_size = dims["window"] * dims["patch_size"]
        if preprocessing.output_size != (image_size, image_size):
            raise PreprocessingError(
                f"{name}: pretrained_cfg input_size gives {preprocessing.output_size[0]}x"
                f"{preprocessing.output_size[1]} images, the weights' relative position bias is for "
                f"{image_size}x{image_size} ({dims['window']}x{dims['window']} patches of "
                f"{dims['patch_size']})"
            )
        num_classes = config.get("num_classes", dims["num_classes"])
        if num_classes != dims["num_classes"]:
            raise UnsupportedCheckpointError(
                f"{name}: config.json says {num_classes} classes, the head has {dims['num_classes']}"
            )
        model = _transformers_model(dims, image_size)
        _load_converted(model, convert_state_dict(state_dict), name)
        logger.info(
            "converted timm %s: %d layers, hidden size %d, %d heads, %d labels",
            config.get("architecture"),
            dims["depth"],
            dims["hidden_size"],
            dims["num_heads"],
            dims["num_classes"],
        )
        return Checkpoint(
            name=name,
            family=self,
            model=model.eval(),
            preprocessing=preprocessing,
            labels=tuple(timm_labels(dims["num_classes"], config)),
            multi_label=False,
            embedding_size=dims["hidden_size"],
            patch_size=dims["patch_size"],
        )

    def layer_scales(self, model: nn.Module) -> list[LayerScale]:
        return self._target.layer_scales(model)

    def relative_position_bias_types(self) -> tuple[type[nn.Module], ...]:
        return self._target.relative_position_bias_types()

    def outputs(self, model: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._target.outputs(model, pixel_values)


def _download(repo_id: str, name: str) -> Path:
    """config.json and one weights file of a hub id into the hub cache; the snapshot folder holding them."""
    try:
        folder = Path(hf_hub_download(repo_id, "config.json")).parent
        for filename in WEIGHTS_FILES:
            try:
                hf_hub_download(repo_id, filename)
                return folder
            except EntryNotFoundError:
                continue
    except OSError as e:
        raise CheckpointNotFoundError(f"cannot load {name}: {e}") from e
    raise CheckpointNotFoundError(f"{name} has none of {', '.join(WEIGHTS_FILES)}")


def _read_weights(folder: Path, name: str) -> dict[str, torch.Tensor]:
    for filename in WEIGHTS_FILES:
        path = folder / filename
        if path.is_file():
            if filename.endswith(".safetensors"):
                return load_file(path)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(loaded, dict):
                raise UnsupportedCheckpointError(f"{name}: {filename} holds no state dict")
            return loaded
    raise CheckpointNotFoundError(f"{name} has none of {', '.join(WEIGHTS_FILES)} beside its config.json")


def infer_dims(state_dict: Mapping[str, torch.Tensor], name: str) -> dict[str, int]:
    """The architecture, read off timm's weights: hidden size, patch size, depth, heads and window (from the
    relative position bias table), MLP width, classes, layer scale."""
    for key in state_dict:
        for pattern, layout in _REFUSED_LAYOUTS:
            if pattern.match(key):
                raise UnsupportedCheckpointError(f"{name} has {layout} ({key}): beit-build cannot convert it")
    required = ("cls_token", "patch_embed.proj.weight", "head.weight", "blocks.0.attn.qkv.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise UnsupportedCheckpointError(f"{name} is not a timm BEiT classifier: no {', '.join(missing)}")
    hidden_size = state_dict["cls_token"].shape[-1]
    out_channels, channels, patch_h, patch_w = state_dict["patch_embed.proj.weight"].shape
    if (out_channels, channels) != (hidden_size, 3) or patch_h != patch_w:
        raise UnsupportedCheckpointError(
            f"{name}: patch embedding {list(state_dict['patch_embed.proj.weight'].shape)}; beit-build "
            "converts square patches of 3-channel images"
        )
    blocks = {int(match.group(1)) for key in state_dict if (match := re.match(r"blocks\.(\d+)\.", key))}
    depth = len(blocks)
    if blocks != set(range(depth)):
        raise UnsupportedCheckpointError(f"{name}: blocks {sorted(blocks)} are not numbered 0..{depth - 1}")
    table_key = "blocks.0.attn.relative_position_bias_table"
    if table_key not in state_dict:
        raise UnsupportedCheckpointError(f"{name} has no relative position bias ({table_key})")
    rows, num_heads = state_dict[table_key].shape
    # (2 * window - 1)^2 relative offsets plus 3 for the class token (timm's gen_relative_position_index).
    side = math.isqrt(max(rows - 3, 0))
    if side * side != rows - 3 or side % 2 == 0:
        raise UnsupportedCheckpointError(
            f"{name}: a relative position bias table of {rows} rows is not a square window's"
        )
    qkv_rows = state_dict["blocks.0.attn.qkv.weight"].shape[0]
    if qkv_rows != 3 * hidden_size or hidden_size % num_heads:
        raise UnsupportedCheckpointError(
            f"{name}: attention of width {qkv_rows // 3} over {num_heads} heads for hidden size "
            f"{hidden_size}; transformers' BEiT needs heads of hidden_size / num_heads"
        )
    gammas = sum(f"blocks.{i}.gamma_1" in state_dict for i in range(depth))
    if gammas not in (0, depth):
        raise UnsupportedCheckpointError(f"{name}: layer scale in {gammas} of {depth} blocks")
    return {
        "hidden_size": hidden_size,
        "patch_size": patch_h,
        "depth": depth,
        "num_heads": num_heads,
        "window": (side + 1) // 2,
        "intermediate_size": state_dict["blocks.0.mlp.fc1.weight"].shape[0]
        if "blocks.0.mlp.fc1.weight" in state_dict
        else 0,
        "num_classes": state_dict["head.weight"].shape[0],
        "layer_scale": int(gammas > 0),
    }


def _check_model_args(model_args: Mapping[str, Any], dims: Mapping[str, int], name: str) -> None:
    """Newer timm writes the constructor's arguments: each must agree with the weights or change nothing."""
    inferred = {
        "embed_dim": dims["hidden_size"],
        "depth": dims["depth"],
        "num_heads": dims["num_heads"],
        "patch_size": dims["patch_size"],
        "num_classes": dims["num_classes"],
        "img_size": dims["window"] * dims["patch_size"],
    }
    for key, value in model_args.items():
        if key in _INFERENCE_NEUTRAL_ARGS:
            continue
        if key in inferred:
            expected = inferred[key]
            sizes = value if isinstance(value, (list, tuple)) else [value]
            if any(size != expected for size in sizes):
                raise UnsupportedCheckpointError(
                    f"{name}: model_args {key}={value!r} disagrees with the weights ({expected})"
                )
        elif key == "mlp_ratio":
            if int(dims["hidden_size"] * value) != dims["intermediate_size"]:
                raise UnsupportedCheckpointError(
                    f"{name}: model_args mlp_ratio={value!r}, the weights' MLP is {dims['intermediate_size']}"
                )
        elif key == "init_values":
            if bool(value) != bool(dims["layer_scale"]):
                raise UnsupportedCheckpointError(
                    f"{name}: model_args init_values={value!r} but the weights "
                    f"{'have' if dims['layer_scale'] else 'lack'} layer scale"
                )
        elif key in _FIXED_ARGS:
            if value != _FIXED_ARGS[key] and not (key == "use_fc_norm" and value is True):
                raise UnsupportedCheckpointError(
                    f"{name}: model_args {key}={value!r}; beit-build converts {key}={_FIXED_ARGS[key]!r}"
                )
        else:
            raise UnsupportedCheckpointError(f"{name}: unknown model_args {key}={value!r}")


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm weight names to transformers', by KEY_TABLE; a weight the table does not name is refused."""
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        if _DROPPED.match(key):
            continue
        for pattern, target in _PATTERNS:
            match = pattern.match(key)
            if match is None:
                continue
            index = match.groupdict().get("i", "")
            if isinstance(target, tuple):
                for part, chunk in zip(target, tensor.chunk(3, dim=0), strict=True):
                    converted[part.format(i=index)] = chunk.contiguous()
            else:
                converted[target.format(i=index)] = tensor
            break
        else:
            unknown.append(key)
    if unknown:
        raise UnsupportedCheckpointError(
            f"weights beit-build does not know how to convert: {', '.join(sorted(unknown)[:8])}"
            + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else "")
        )
    return converted


def _transformers_model(dims: Mapping[str, int], image_size: int) -> nn.Module:
    settings: dict[str, Any] = dict(
        hidden_size=dims["hidden_size"],
        num_hidden_layers=dims["depth"],
        num_attention_heads=dims["num_heads"],
        intermediate_size=dims["intermediate_size"],
        hidden_act="gelu",
        layer_norm_eps=LAYER_NORM_EPS,
        image_size=image_size,
        patch_size=dims["patch_size"],
        num_channels=3,
        use_absolute_position_embeddings=False,
        use_relative_position_bias=True,
        use_shared_relative_position_bias=False,
        # Any positive value creates the lambda parameters; the weights then set them.
        layer_scale_init_value=0.1 if dims["layer_scale"] else 0.0,
        use_mean_pooling=True,
        num_labels=dims["num_classes"],
        # Eager attention: the relative position bias is an additive mask, which only eager exports.
        attn_implementation="eager",
    )
    model: nn.Module = BeitForImageClassification(BeitConfig(**settings))
    return model


def _load_converted(model: nn.Module, converted: Mapping[str, torch.Tensor], name: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise UnsupportedCheckpointError(
            f"{name} lacks weights a BEiT classifier needs (as {', '.join(missing[:4])})"
        )
    wrong = [key for key, tensor in converted.items() if tensor.shape != expected[key].shape]
    if wrong:
        raise UnsupportedCheckpointError(
            f"{name}: weights of inconsistent shapes across blocks: {', '.join(wrong[:4])}"
        )
    model.load_state_dict({key: tensor.float() for key, tensor in converted.items()}, strict=True)


def timm_preprocessing(pretrained_cfg: Mapping[str, Any]) -> PreprocessingConfig:
    """What `timm.data.create_transform(**timm.data.resolve_data_config({}, pretrained_cfg=cfg))` computes
    (timm 1.0 transforms_imagenet_eval): for crop_mode "center", resize the shortest side to
    floor(size / crop_pct) and center-crop `size`; for "squash", resize to floor(size / crop_pct) on both
    sides and center-crop; then ToTensor and Normalize(mean, std). resolve_data_config's defaults fill what
    the cfg leaves out (or leaves falsy)."""
    try:
        channels, height, width = (int(v) for v in pretrained_cfg.get("input_size") or _DEFAULT_INPUT_SIZE)
    except (TypeError, ValueError) as e:
        raise PreprocessingError(f"pretrained_cfg input_size is not [3, H, W]: {e}") from e
    interpolation = pretrained_cfg.get("interpolation") or "bicubic"
    crop_pct = pretrained_cfg.get("crop_pct") or _DEFAULT_CROP_PCT
    crop_mode = pretrained_cfg.get("crop_mode") or "center"
    mean = pretrained_cfg.get("mean") or _IMAGENET_DEFAULT_MEAN
    std = pretrained_cfg.get("std") or _IMAGENET_DEFAULT_STD
    if channels != 3 or interpolation not in _PIL_FILTERS:
        raise PreprocessingError(
            f"pretrained_cfg input_size {[channels, height, width]}, interpolation {interpolation!r}: "
            f"beit-build serves 3-channel images resized with one of {', '.join(_PIL_FILTERS)}"
        )
    scale_h, scale_w = math.floor(height / crop_pct), math.floor(width / crop_pct)
    if crop_mode == "squash":
        size = SizeSpec(height=scale_h, width=scale_w)
    elif crop_mode == "center" and scale_h == scale_w:
        # torchvision Resize(int): the shortest side to that size.
        size = SizeSpec(shortest_edge=scale_h)
    else:
        raise PreprocessingError(
            f"pretrained_cfg crop_mode {crop_mode!r} at {height}x{width}: beit-build reproduces timm's "
            "'center' (square inputs) and 'squash' crops"
        )
    try:
        return PreprocessingConfig(
            do_resize=True,
            size=size,
            resample=_PIL_FILTERS[interpolation],
            do_center_crop=True,
            crop_size=SizeSpec(height=height, width=width),
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
            image_mean=_three(mean, "mean"),
            image_std=_three(std, "std"),
            pipeline="torchvision",
        )
    except ValueError as e:
        raise PreprocessingError(f"unsupported pretrained_cfg: {e}") from e


def _three(values: Any, key: str) -> tuple[float, float, float]:
    if not isinstance(values, (list, tuple)) or len(values) != 3:
        raise PreprocessingError(f"pretrained_cfg {key} must be 3 numbers, got {values!r}")
    return float(values[0]), float(values[1]), float(values[2])


def timm_labels(num_classes: int, config: Mapping[str, Any]) -> list[str]:
    """ImageNet heads by their class count, as timm's infer_imagenet_subset guesses them: 1,000 gets the
    ImageNet-1k names, 21,841 the fall11 ImageNet-22k ones (both from timm's ImageNetInfo data). Other heads
    get config.json's label_names (through label_descriptions), else LABEL_i as transformers names them."""
    if num_classes == IMAGENET1K_NUM_LABELS:
        return imagenet1k_labels()
    if num_classes == IMAGENET22K_NUM_LABELS:
        return imagenet22k_labels()
    names = config.get("label_names")
    descriptions = config.get("label_descriptions") or {}
    if isinstance(names, Mapping):
        # timm allows {index: name} where the ids have gaps; JSON keys are strings.
        names = [names.get(str(i)) for i in range(num_classes)]
    if isinstance(names, list) and len(names) == num_classes and all(names):
        return [one_line(str(descriptions.get(name, name))) for name in names]
    logger.warning("%d-class head without label names: labels LABEL_0...; give --labels", num_classes)
    return [f"LABEL_{i}" for i in range(num_classes)]


FAMILY = TimmBeitFamily(beit.FAMILY)
