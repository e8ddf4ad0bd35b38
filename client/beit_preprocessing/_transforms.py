"""Resize, center crop, rescale and normalize, bit for bit as transformers' `BeitImageProcessorPil` (5.23).

HF's PIL backend (image_processing_backends.PilBackend and image_transforms) does, per image:
uint8 RGB -> `PIL.Image.resize((w, h), resample)` -> center crop (zero padding when too small) ->
`uint8.astype(float64) * rescale_factor -> float32` -> `(x - mean32) / std32` in float32.
After the resize every step is a function of one uint8 value and its channel, so a [3, 256] table computed
with exactly those numpy operations replaces them: same bits, one gather per pixel.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from beit_preprocessing._config import PreprocessingConfig, SizeSpec
from beit_preprocessing._decode import Decoded, DraftTarget, decode

Pixels = npt.NDArray[np.float32]


def preprocess_image(image: Image.Image, config: PreprocessingConfig) -> Pixels:
    """float32 [3, H, W] from an upright image (`decode_image`'s output; other modes are converted to RGB)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return _preprocess(Decoded(rgb, rgb.size), config)


def preprocess_bytes(
    data: bytes, config: PreprocessingConfig, *, max_pixels: int, out: Pixels | None = None
) -> Pixels:
    """Decode and preprocess one encoded image; in "fast" mode JPEGs decode at a reduced DCT scale first.
    `out`, float32 [3, H, W] of the output size, receives the pixels in place of a new array."""
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
    pixels = np.asarray(image)
    if config.do_center_crop:
        assert config.crop_size is not None and config.crop_size.height and config.crop_size.width
        pixels = _center_crop(pixels, config.crop_size.height, config.crop_size.width)
    return _apply_table(pixels, config, out)


def _center_crop(pixels: npt.NDArray[np.uint8], crop_h: int, crop_w: int) -> npt.NDArray[np.uint8]:
    """image_transforms.center_crop on HWC: offsets floor; a small image is zero-padded (ceil top/left)."""
    height, width = pixels.shape[:2]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    if top >= 0 and left >= 0:
        return pixels[top : top + crop_h, left : left + crop_w]
    new_h, new_w = max(crop_h, height), max(crop_w, width)
    top_pad, left_pad = -(-(new_h - height) // 2), -(-(new_w - width) // 2)
    padded = np.zeros((new_h, new_w) + pixels.shape[2:], dtype=pixels.dtype)
    padded[top_pad : top_pad + height, left_pad : left_pad + width] = pixels
    top, left = top + top_pad, left + left_pad
    return padded[max(0, top) : min(new_h, top + crop_h), max(0, left) : min(new_w, left + crop_w)]


def _apply_table(
    pixels: npt.NDArray[np.uint8], config: PreprocessingConfig, out: Pixels | None = None
) -> Pixels:
    table = _value_table(
        config.do_rescale, config.rescale_factor, config.do_normalize, config.image_mean, config.image_std
    )
    height, width = pixels.shape[:2]
    if out is None:
        out = np.empty((3, height, width), dtype=np.float32)
    elif out.shape != (3, height, width) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {[3, height, width]}, not {out.dtype} {list(out.shape)}")
    for channel in range(3):
        np.take(table[channel], pixels[:, :, channel], out=out[channel])
    return out


@lru_cache(maxsize=32)
def _value_table(
    do_rescale: bool,
    rescale_factor: float,
    do_normalize: bool,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> Pixels:
    """[3, 256]: what HF's rescale then normalize make of each uint8 value in each channel."""
    values: npt.NDArray[Any] = np.tile(np.arange(256, dtype=np.uint8), (3, 1))
    if do_rescale:
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
