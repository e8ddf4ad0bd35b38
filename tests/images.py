"""Encoded test images: several formats, modes, sizes and EXIF orientations, generated deterministically."""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: content whose resampling differs measurably between filters."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        128
        + 100 * np.sin(x / (7 + 5 * c) + c) * np.cos(y / (11 + 3 * c))
        + rng.normal(0, 12, (height, width))
        for c in range(3)
    ]
    return Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height over a few bytes of data: refused from the header alone by
    a pixel limit, or found truncated once decoded."""
    header = encode(Image.new("1", (1, 1)), "PNG")
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + header[24:29]
    return header[:16] + ihdr + zlib.crc32(b"IHDR" + ihdr).to_bytes(4, "big") + header[33:]


def with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return encode(image, "JPEG", quality=95, exif=exif)


def varied_images() -> dict[str, bytes]:
    """One encoded file per case the preprocessor must handle, keyed by a readable name."""
    base = photo(320, 240, seed=1)
    portrait = photo(181, 397, seed=2)
    cases = {
        "jpeg-rgb-320x240": encode(base, "JPEG", quality=90),
        "png-rgb-portrait-181x397": encode(portrait, "PNG"),
        "webp-rgb": encode(base, "WEBP", quality=90),
        "bmp-rgb": encode(base, "BMP"),
        "gif-palette": encode(base.convert("P"), "GIF"),
        "tiff-cmyk": encode(base.convert("CMYK"), "TIFF"),
        "jpeg-cmyk": encode(base.convert("CMYK"), "JPEG", quality=90),
        "png-grayscale-L": encode(base.convert("L"), "PNG"),
        "png-LA": encode(base.convert("LA"), "PNG"),
        "png-RGBA": encode(base.convert("RGBA"), "PNG"),
        "png-16-bit-I;16": encode(Image.fromarray(np.asarray(base.convert("L"), np.uint16) * 257), "PNG"),
        "png-1x1": encode(photo(1, 1, seed=3), "PNG"),
        "png-panorama-1000x60": encode(photo(1000, 60, seed=4), "PNG"),
    }
    for orientation in range(1, 9):
        cases[f"jpeg-exif-orientation-{orientation}"] = with_orientation(portrait, orientation)
    return cases
