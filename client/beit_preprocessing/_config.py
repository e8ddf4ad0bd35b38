"""The checkpoint's image-processor settings, from HF preprocessor_config.json or Triton model parameters.

The settings are named as in HF preprocessor_config.json. `pipeline` says whose arithmetic the steps follow:
"transformers" (`BeitImageProcessorPil`) or "torchvision" (timm's eval transform: torchvision's `Resize`,
`CenterCrop`, `ToTensor` and `Normalize` on PIL images), which crops at other offsets
(see `beit_preprocessing._transforms`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

Mode = Literal["exact", "fast"]
MODES: tuple[Mode, ...] = ("exact", "fast")
Pipeline = Literal["transformers", "torchvision"]
PIPELINES: tuple[Pipeline, ...] = ("transformers", "torchvision")

# The keys beit-build writes as JSON text into every config it builds, named as in HF
# preprocessor_config.json, plus `pipeline`.
PARAMETER_KEYS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "pipeline",
)
# Repositories built before `pipeline` existed were all built from transformers checkpoints.
_DEFAULT_PARAMETERS = {"pipeline": '"transformers"'}

# PIL.Image.Resampling values; kept as ints so the config stays plain data.
_BILINEAR = 2
_BICUBIC = 3
_IMAGENET_STANDARD = (0.5, 0.5, 0.5)
# torchvision's ToTensor divides uint8 values by 255.
_TORCHVISION_RESCALE = 1 / 255
# A JSON null for these means what None means to HF (bilinear, no crop size); for the rest, the class default.
_NULLABLE = frozenset({"resample", "crop_size"})
_SIZE_KEYS = frozenset({"height", "width", "shortest_edge", "longest_edge"})


@dataclass(frozen=True)
class SizeSpec:
    """A resize or crop target as HF writes it: height and width, or shortest_edge (and longest_edge)."""

    height: int | None = None
    width: int | None = None
    shortest_edge: int | None = None
    longest_edge: int | None = None

    def __post_init__(self) -> None:
        fixed = self.height is not None and self.width is not None
        if fixed == (self.shortest_edge is not None) or (fixed and self.longest_edge is not None):
            raise ValueError(f"a size needs height and width, or shortest_edge; got {self.to_dict()}")

    @classmethod
    def from_value(cls, value: Any) -> SizeSpec:
        """Every form HF's `get_size_dict(default_to_square=True)` accepts: int, [h, w], or a dict."""
        if isinstance(value, bool):
            raise ValueError(f"not a size: {value!r}")
        if isinstance(value, int):
            return cls(height=value, width=value)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return cls(height=int(value[0]), width=int(value[1]))
        if isinstance(value, Mapping):
            unknown = set(value) - _SIZE_KEYS
            if unknown:
                raise ValueError(f"unsupported size keys {sorted(unknown)} in {dict(value)}")
            return cls(**{key: int(item) for key, item in value.items() if item is not None})
        raise ValueError(f"not a size: {value!r}")

    @property
    def is_fixed(self) -> bool:
        return self.height is not None and self.width is not None

    def to_dict(self) -> dict[str, int]:
        items = {
            "height": self.height,
            "width": self.width,
            "shortest_edge": self.shortest_edge,
            "longest_edge": self.longest_edge,
        }
        return {key: value for key, value in items.items() if value is not None}


@dataclass(frozen=True)
class PreprocessingConfig:
    """What `BeitImageProcessorPil` (or, with pipeline "torchvision", timm's eval transform) does to an image;
    defaults are `BeitImageProcessorPil`'s own."""

    do_resize: bool = True
    size: SizeSpec = SizeSpec(height=224, width=224)
    resample: int = _BICUBIC
    do_center_crop: bool = False
    crop_size: SizeSpec | None = SizeSpec(height=224, width=224)
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = _IMAGENET_STANDARD
    image_std: tuple[float, float, float] = _IMAGENET_STANDARD
    pipeline: Pipeline = "transformers"
    mode: Mode = "exact"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got {self.pipeline!r}")
        if self.pipeline == "torchvision" and not (
            self.do_rescale and self.rescale_factor == _TORCHVISION_RESCALE
        ):
            raise ValueError("the torchvision pipeline rescales by 1/255 (ToTensor): do_rescale must be true")
        if self.do_center_crop and (self.crop_size is None or not self.crop_size.is_fixed):
            raise ValueError(f"center crop needs a crop_size with height and width, got {self.crop_size}")

    @classmethod
    def from_image_processor_dict(
        cls, values: Mapping[str, Any], *, mode: Mode = "exact"
    ) -> PreprocessingConfig:
        """From a preprocessor_config.json dict; a missing key takes BeitImageProcessorPil's default."""
        present = {
            key: values[key]
            for key in PARAMETER_KEYS
            if key in values and (values[key] is not None or key in _NULLABLE)
        }
        return cls(mode=mode, **_typed(present))

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> PreprocessingConfig:
        """From Triton model parameters: JSON text for the HF keys (beit-build), plain text for `mode`."""
        parameters = {**_DEFAULT_PARAMETERS, **parameters}
        missing = [key for key in PARAMETER_KEYS if key not in parameters]
        if missing:
            raise ValueError(
                f"missing preprocessing parameters {missing}: run beit-build to write the checkpoint's "
                "parameters into the model repository"
            )
        decoded = {}
        for key in PARAMETER_KEYS:
            try:
                decoded[key] = json.loads(parameters[key])
            except json.JSONDecodeError as e:
                raise ValueError(f"parameter {key!r} is not JSON text: {parameters[key]!r}") from e
        config = cls.from_image_processor_dict(decoded)
        mode = parameters.get("mode", "exact").strip()
        if mode not in MODES:
            raise ValueError(f"parameter 'mode' must be one of {MODES}, got {mode!r}")
        return replace(config, mode=mode)

    def to_parameters(self) -> dict[str, str]:
        """The generated (checkpoint) parameters as JSON text; `mode`, a deployment choice, is left out."""
        values: dict[str, Any] = {
            "do_resize": self.do_resize,
            "size": self.size.to_dict(),
            "resample": self.resample,
            "do_center_crop": self.do_center_crop,
            "crop_size": None if self.crop_size is None else self.crop_size.to_dict(),
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "pipeline": self.pipeline,
        }
        return {key: json.dumps(value) for key, value in values.items()}

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of every preprocessed image; ValueError when it depends on the input's aspect."""
        if self.do_center_crop and self.crop_size is not None:
            return _fixed(self.crop_size)
        if self.do_resize and self.size.is_fixed:
            return _fixed(self.size)
        raise ValueError("the output size depends on the input image: no center crop and no fixed resize")


def _fixed(size: SizeSpec) -> tuple[int, int]:
    assert size.height is not None and size.width is not None
    return size.height, size.width


def _typed(values: Mapping[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith("do_"):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be a boolean, got {value!r}")
            typed[key] = value
        elif key == "crop_size" and value is None:
            typed[key] = None
        elif key in ("size", "crop_size"):
            typed[key] = SizeSpec.from_value(value)
        elif key == "resample":
            # HF's PIL resize falls back to bilinear when the processor's resample is None.
            typed[key] = _BILINEAR if value is None else int(value)
        elif key == "rescale_factor":
            typed[key] = float(value)
        elif key == "pipeline":
            if value not in PIPELINES:
                raise ValueError(f"pipeline must be one of {PIPELINES}, got {value!r}")
            typed[key] = value
        else:
            typed[key] = _channels(key, value)
    return typed


def _channels(key: str, value: Any) -> tuple[float, float, float]:
    # HF's normalize repeats a scalar mean/std over the channels.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),) * 3
    if isinstance(value, (list, tuple)) and len(value) == 3:
        return (float(value[0]), float(value[1]), float(value[2]))
    raise ValueError(f"{key} must be a number or 3 numbers, got {value!r}")
