"""Resize, center crop, rescale and normalize, bit for bit as transformers' `BeitImageProcessorPil` (5.23), or
as timm's eval transform (timm 1.0, torchvision 0.28) for the "torchvision" pipeline.

HF's PIL backend (image_processing_backends.PilBackend and image_transforms) does, per image:
uint8 RGB -> `PIL.Image.resize((w, h), resample)` -> center crop (zero padding when too small) ->
`uint8.astype(float64) * rescale_factor -> float32` -> `(x - mean32) / std32` in float32.

timm's eval transform (`timm.data.create_transform(**resolve_data_config(...))`, crop_mode "center") is
torchvision's `Resize(shortest_edge)`: the same size arithmetic and the same `PIL.Image.resize`; then
`CenterCrop`, whose offsets are `int(round((size - crop) / 2.0))` (Python rounds half to even) where HF
floors, and whose zero padding of a too-small image puts the odd pixel after the image where HF puts it
before; then `ToTensor` (`uint8 -> float32`, divided by 255 in float32) and `Normalize`
(`(x - mean32) / std32` in float32).

After the crop every step is a function of one uint8 value and its channel, so a [3, 256] table computed
with exactly those numpy operations replaces them: same bits, one gather per pixel. The server's
preprocessor therefore stops at the crop and hands on uint8 pixels (a quarter of float32's bytes through the
stubs' shared memory, and over PCIe to a GPU); the exported graph starts with float32 operations shown to
give the table's values (`exact_normalization_steps`), or with the lookup itself (beit_build.export), and
`normalize` applies the table where float pixels are wanted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from beit_preprocessing._config import PreprocessingConfig, SizeSpec
from beit_preprocessing._decode import Decoded, DraftTarget, decode

Pixels = npt.NDArray[np.uint8]
"""uint8 RGB [3, H, W], resized and cropped: what beit_preprocess outputs and the network takes."""
NormalizedPixels = npt.NDArray[np.float32]
"""float32 [..., 3, H, W]: what the checkpoint's image processor outputs (`normalize`)."""


def preprocess_image(image: Image.Image, config: PreprocessingConfig) -> Pixels:
    """uint8 [3, H, W] from an upright image (`decode_image`'s output; other modes are converted to RGB)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return _preprocess(Decoded(rgb, rgb.size), config)


def preprocess_bytes(
    data: bytes, config: PreprocessingConfig, *, max_pixels: int, out: Pixels | None = None
) -> Pixels:
    """Decode and preprocess one encoded image; in "fast" mode JPEGs decode at a reduced DCT scale first.
    `out`, uint8 [3, H, W] of the output size, receives the pixels in place of a new array."""
    draft = _draft_target(config) if config.mode == "fast" and config.do_resize else None
    return _preprocess(decode(data, max_pixels=max_pixels, draft_target=draft), config, out)


def resize_output_size(height: int, width: int, size: SizeSpec) -> tuple[int, int]:
    """(height, width) HF's PIL resize produces for an image of (height, width)."""
    if size.shortest_edge is not None and size.longest_edge is not None:
        return _size_with_aspect_ratio(height, width, size.shortest_edge, size.longest_edge)
    if size.shortest_edge is not None:
        # image_transforms.get_resize_output_image_size(default_to_square=False): the long side truncates.
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size.shortest_edge, int(size.shortest_edge * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    assert size.height is not None and size.width is not None
    return size.height, size.width


def _size_with_aspect_ratio(height: int, width: int, shortest: int, longest: int) -> tuple[int, int]:
    # image_transforms.get_size_with_aspect_ratio, float for float.
    raw_size = None
    target = shortest
    min_side, max_side = float(min(height, width)), float(max(height, width))
    if max_side / min_side * target > longest:
        raw_size = longest * min_side / max_side
        target = int(round(raw_size))
    if (height <= width and height == target) or (width <= height and width == target):
        return height, width
    if width < height:
        scale = raw_size if raw_size is not None else target
        return int(scale * height / width), target
    scale = raw_size if raw_size is not None else target
    return target, int(scale * width / height)


def _draft_target(config: PreprocessingConfig) -> DraftTarget:
    def target(source_size: tuple[int, int]) -> tuple[int, int]:
        height, width = resize_output_size(source_size[1], source_size[0], config.size)
        return width, height

    return target


def _preprocess(decoded: Decoded, config: PreprocessingConfig, out: Pixels | None = None) -> Pixels:
    image = decoded.image
    if config.do_resize:
        width, height = decoded.source_size
        out_height, out_width = resize_output_size(height, width, config.size)
        image = image.resize((out_width, out_height), config.resample, box=decoded.box)
    bands = _bands(image)
    if config.do_center_crop:
        assert config.crop_size is not None and config.crop_size.height and config.crop_size.width
        crop = _torchvision_center_crop if config.pipeline == "torchvision" else _center_crop
        bands = [crop(band, config.crop_size.height, config.crop_size.width) for band in bands]
    return _channels_first(bands, out)


def _bands(image: Image.Image) -> list[npt.NDArray[np.uint8]]:
    """The R, G and B planes of an RGB image, [H, W] each. Pillow packs them one at a time for a third of
    what numpy's copy and transpose of its interleaved pixels cost (0.05 against 0.13-0.16 ms per 224x224)."""
    width, height = image.size
    return [
        np.frombuffer(image.tobytes("raw", band), dtype=np.uint8).reshape(height, width) for band in "RGB"
    ]


def _torchvision_center_crop(
    pixels: npt.NDArray[np.uint8], crop_h: int, crop_w: int
) -> npt.NDArray[np.uint8]:
    """torchvision.transforms.functional.center_crop on one [H, W] plane: a small image is zero-padded
    first (floor top/left), then the offsets round half to even."""
    height, width = pixels.shape
    if crop_h > height or crop_w > width:
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        padded = np.zeros((height + pad_h, width + pad_w), dtype=pixels.dtype)
        top_pad, left_pad = pad_h // 2, pad_w // 2
        padded[top_pad : top_pad + height, left_pad : left_pad + width] = pixels
        pixels, (height, width) = padded, padded.shape
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return pixels[top : top + crop_h, left : left + crop_w]


def _center_crop(pixels: npt.NDArray[np.uint8], crop_h: int, crop_w: int) -> npt.NDArray[np.uint8]:
    """image_transforms.center_crop on one [H, W] plane: offsets floor; a small image is zero-padded (ceil
    top/left)."""
    height, width = pixels.shape
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return pixels[top : top + crop_h, left : left + crop_w]
    new_h, new_w = max(crop_h, height), max(crop_w, width)
    top_pad, left_pad = -(-(new_h - height) // 2), -(-(new_w - width) // 2)
    padded = np.zeros((new_h, new_w), dtype=pixels.dtype)
    padded[top_pad : top_pad + height, left_pad : left_pad + width] = pixels
    top, left = top + top_pad, left + left_pad
    return padded[max(0, top) : min(new_h, top + crop_h), max(0, left) : min(new_w, left + crop_w)]


def _channels_first(bands: list[npt.NDArray[np.uint8]], out: Pixels | None) -> Pixels:
    height, width = bands[0].shape
    if out is None:
        out = np.empty((3, height, width), dtype=np.uint8)
    elif out.shape != (3, height, width) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {[3, height, width]}, not {out.dtype} {list(out.shape)}")
    for plane, band in zip(out, bands, strict=True):
        plane[...] = band
    return out


_CHANNEL_OFFSETS = (np.arange(3, dtype=np.intp) * 256)[:, None, None]
"""Channel c's uint8 value v is entry c * 256 + v of the flattened table."""


def normalize(pixels: Pixels, config: PreprocessingConfig) -> NormalizedPixels:
    """uint8 [..., 3, H, W] -> float32: the image processor's rescale and normalize, bit for bit (the table;
    the exported graph computes the same values, beit_build.export.PixelNormalization)."""
    if pixels.dtype != np.uint8 or pixels.ndim < 3 or pixels.shape[-3] != 3:
        raise ValueError(f"pixels must be uint8 [..., 3, H, W], not {pixels.dtype} {list(pixels.shape)}")
    table = normalization_table(config).reshape(-1)
    return table[pixels.astype(np.intp) + _CHANNEL_OFFSETS]


@dataclass(frozen=True)
class NormalizationSteps:
    """float32 `(pixel / divisor - mean[c]) / std[c]`, one IEEE operation at a time."""

    divisor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def exact_normalization_steps(config: PreprocessingConfig) -> NormalizationSteps | None:
    """Three float32 operations that give `normalization_table` bit for bit for every uint8 value in every
    channel, or None. The image processor multiplies in float64 and rounds to float32, the same per-value
    result as float32 division by 255 (the exported graph cannot carry float64: TensorRT has none); a
    lookup graph is ten times slower than these operations in ONNX Runtime, so the exporter prefers them
    where they are exact."""
    if config.pipeline == "torchvision":
        divisor = 255.0
    else:
        divisor = 1 / config.rescale_factor if config.do_rescale else 1.0
    mean, std = (config.image_mean, config.image_std) if config.do_normalize else ((0.0,) * 3, (1.0,) * 3)
    steps = NormalizationSteps(divisor, mean, std)
    values = np.arange(256, dtype=np.float32) / np.float32(divisor)
    computed = (values - np.array(mean, dtype=np.float32)[:, None]) / np.array(std, dtype=np.float32)[:, None]
    return steps if np.array_equal(computed, normalization_table(config)) else None


def normalization_table(config: PreprocessingConfig) -> NormalizedPixels:
    """[3, 256], read-only: what the image processor's rescale and normalize make of each uint8 value in each
    channel."""
    return _value_table(
        config.pipeline,
        config.do_rescale,
        config.rescale_factor,
        config.do_normalize,
        config.image_mean,
        config.image_std,
    )


@lru_cache(maxsize=32)
def _value_table(
    pipeline: str,
    do_rescale: bool,
    rescale_factor: float,
    do_normalize: bool,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> NormalizedPixels:
    """[3, 256]: what HF's rescale then normalize (or ToTensor then Normalize) make of each uint8 value in
    each channel."""
    values: npt.NDArray[Any] = np.tile(np.arange(256, dtype=np.uint8), (3, 1))
    if pipeline == "torchvision":
        # to_tensor: `img.to(float32).div(255)`; the config guarantees do_rescale with 1/255.
        values = values.astype(np.float32) / np.float32(255)
    elif do_rescale:
        # image_transforms.rescale: upcast to float64 first, multiply, then downcast to float32.
        values = (values.astype(np.float64) * rescale_factor).astype(np.float32)
    if do_normalize:
        # image_transforms.normalize: integer input becomes float32; mean and std take the image's dtype.
        if not np.issubdtype(values.dtype, np.floating):
            values = values.astype(np.float32)
        mean_arr = np.array(mean, dtype=values.dtype)[:, None]
        std_arr = np.array(std, dtype=values.dtype)[:, None]
        values = (values - mean_arr) / std_arr
    table = values.astype(np.float32)
    table.flags.writeable = False
    return table
