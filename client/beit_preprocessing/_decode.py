"""Encoded image bytes to an upright RGB PIL image, as transformers.image_utils.load_image makes it."""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Callable
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from beit_preprocessing._errors import (
    EmptyImageError,
    TooManyPixelsError,
    TruncatedImageError,
    UndecodableImageError,
)

# Formats a client may send. An allowlist keeps Pillow's riskier plugins (EPS runs Ghostscript) out of reach
# of untrusted bytes. (Multi-picture phone JPEGs open through the JPEG opener, which returns an MPO image.)
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

DEFAULT_MAX_PIXELS = 40_000_000
"""Images that decode to more pixels than this are refused: the server's default (`max_pixels` parameter of
beit_preprocess) and the SDK's for client-side preprocessing, so both accept the same images. 40 MP takes
any phone photo up to 8K; each such image decodes to 120 MB of RGB."""

_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)

# KServe v2 JSON carries BYTES elements as text, so JSON clients send the file base64-encoded, optionally as
# a data: URL. No binary image file is pure base64 text (their headers hold bytes outside that alphabet).
_BASE64_TEXT = re.compile(rb"(?:data:[\w/+.-]*;base64,)?([A-Za-z0-9+/\s]+={0,2}\s*)")

# EXIF orientations that swap width and height (ImageOps.exif_transpose: TRANSPOSE, ROTATE_270, TRANSVERSE,
# ROTATE_90).
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# Where a box anchored at (0, 0) in a (w, h) stored image lands after exif_transpose, for each orientation.
_BoxMap = Callable[[float, float, int, int], tuple[float, float, float, float]]
_TRANSPOSED_BOX: dict[int, _BoxMap] = {
    2: lambda bw, bh, w, h: (w - bw, 0, w, bh),
    3: lambda bw, bh, w, h: (w - bw, h - bh, w, h),
    4: lambda bw, bh, w, h: (0, h - bh, bw, h),
    5: lambda bw, bh, w, h: (0, 0, bh, bw),
    6: lambda bw, bh, w, h: (h - bh, 0, h, bw),
    7: lambda bw, bh, w, h: (h - bh, w - bw, h, w),
    8: lambda bw, bh, w, h: (0, w - bw, bh, w),
}

# (width, height) of the upright image -> (width, height) the JPEG decoder may scale down to.
DraftTarget = Callable[[tuple[int, int]], tuple[int, int]]


@dataclass(frozen=True)
class Decoded:
    """An upright RGB image; when the decoder scaled it down, `box` is the region that maps onto
    `source_size` (the upright full-resolution size), for `Image.resize(box=...)`."""

    image: Image.Image
    source_size: tuple[int, int]
    box: tuple[float, float, float, float] | None = None


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode, refuse bombs, apply EXIF orientation and convert to RGB like `load_image`."""
    return decode(data, max_pixels=max_pixels).image


def decode(data: bytes, *, max_pixels: int, draft_target: DraftTarget | None = None) -> Decoded:
    """`decode_image`, optionally letting a JPEG decode at 1/2, 1/4 or 1/8 scale (DCT-domain downscaling)
    while staying at least `draft_target(upright size)` large."""
    image = _open(data, max_pixels)
    orientation = _orientation(image)
    swapped = orientation in _SWAPPING_ORIENTATIONS
    stored_w, stored_h = image.size
    source_size = (stored_h, stored_w) if swapped else (stored_w, stored_h)
    box = None
    if draft_target is not None:
        target_w, target_h = draft_target(source_size)
        drafted = image.draft("RGB", (target_h, target_w) if swapped else (target_w, target_h))
        if drafted is not None and image.size != (stored_w, stored_h):
            _, (_, _, box_w, box_h) = drafted
            box = _upright_box(orientation, box_w, box_h, image.size)
    _load(image)
    upright = _exif_transpose(image)
    rgb = upright if upright.mode == "RGB" else upright.convert("RGB")
    return Decoded(rgb, source_size, box)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise EmptyImageError("the image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(_from_base64_text(data) or data), formats=SUPPORTED_FORMATS)
    except _BOMB_ERRORS as e:
        raise TooManyPixelsError(f"the image has too many pixels (decompression-bomb guard): {e}") from e
    except Exception as e:
        # No opener recognized the bytes: Pillow's own message only adds the repr of the buffer it read.
        # Other types (OSError, SyntaxError, struct.error, ...) come from a malformed header and say where.
        detail = "" if isinstance(e, UnidentifiedImageError) else f": {e}"
        raise UndecodableImageError(
            f"not an image in a supported format ({', '.join(SUPPORTED_FORMATS)}){detail}"
        ) from e
    width, height = image.size
    # Checked from the header alone, before any pixel data is decoded.
    if width * height > max_pixels:
        image.close()
        raise TooManyPixelsError(_too_many_pixels_message(width, height, max_pixels))
    return image


def _too_many_pixels_message(width: int, height: int, max_pixels: int) -> str:
    return (
        f"the image is {width}x{height} = {width * height:,} pixels, more than the {max_pixels:,} allowed "
        f"(max_pixels); to accept larger images, raise the max_pixels parameter of the beit_preprocess model "
        f"config on the server, and beit_preprocessing.DEFAULT_MAX_PIXELS for client-side preprocessing"
    )


def _from_base64_text(data: bytes) -> bytes | None:
    """The decoded file when `data` is base64 text (a JSON client's upload), else None."""
    match = _BASE64_TEXT.fullmatch(data)
    if match is None:
        return None
    try:
        return base64.b64decode(re.sub(rb"\s", b"", match.group(1)), validate=True)
    except binascii.Error:
        return None


def _load(image: Image.Image) -> None:
    try:
        image.load()
    except _BOMB_ERRORS as e:
        raise TooManyPixelsError(f"the image has too many pixels (decompression-bomb guard): {e}") from e
    except Exception as e:
        raise TruncatedImageError(f"the {image.format} image data is truncated or corrupt: {e}") from e


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:
        # ImageOps.exif_transpose would fail on the same EXIF block; decode the image upright as stored.
        return 1
    return value if isinstance(value, int) else 1


def _exif_transpose(image: Image.Image) -> Image.Image:
    try:
        # In place: load_image's copying variant gives the same pixels, one copy later.
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as e:
        raise TruncatedImageError(f"the image's EXIF data is corrupt: {e}") from e
    return image


def _upright_box(
    orientation: int, box_w: float, box_h: float, stored_size: tuple[int, int]
) -> tuple[float, float, float, float]:
    width, height = stored_size
    transposed = _TRANSPOSED_BOX.get(orientation)
    return (0, 0, box_w, box_h) if transposed is None else transposed(box_w, box_h, width, height)
