"""Turning what a caller passes as an image into what goes on the wire: encoded file bytes (server-side
preprocessing) or a PIL image (client-side preprocessing). Every failure is an `InvalidImageError` naming the
image's index in the caller's input."""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
from PIL import Image

from ._constants import DEFAULT_IMAGE_ENCODING, DEFAULT_JPEG_QUALITY, MAX_URL_IMAGE_BYTES, URL_FETCH_TIMEOUT
from ._exceptions import InvalidImageError
from ._types import ImageEncoding, ImageInput, ImagesInput

if TYPE_CHECKING:
    from beit_preprocessing import PreprocessingConfig

__all__ = ["ImageOptions", "as_image_list", "describe_image", "encode_image", "preprocess_on_client"]

_URL_PREFIXES = ("http://", "https://")


@dataclass(frozen=True)
class ImageOptions:
    """How images are read and encoded; `RequestOptions` checks the values a caller gives."""

    encoding: ImageEncoding = DEFAULT_IMAGE_ENCODING
    """How in-memory images (PIL, numpy) are encoded; files, bytes and URLs are sent as they are."""
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    url_timeout: float = URL_FETCH_TIMEOUT
    max_url_bytes: int = MAX_URL_IMAGE_BYTES


def _is_single_image(images: object) -> bool:
    return isinstance(images, (str, os.PathLike, bytes, bytearray, Image.Image, np.ndarray)) or hasattr(
        images, "read"
    )


def as_image_list(images: ImagesInput) -> list[ImageInput]:
    """One image becomes a list of one; a sequence is kept in order."""
    if _is_single_image(images):
        return [cast(ImageInput, images)]
    if not isinstance(images, Sequence):
        raise TypeError(f"expected an image or a sequence of images, got {type(images).__name__}")
    return list(cast(Sequence[ImageInput], images))


def _is_url(image: object) -> bool:
    return isinstance(image, str) and image.startswith(_URL_PREFIXES)


def describe_image(image: ImageInput) -> str:
    """A short human name for an image, for error messages."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, (bytes, bytearray)):
        return f"{len(image)} bytes"
    if isinstance(image, Image.Image):
        return f"PIL image {image.mode} {image.width}x{image.height}"
    if isinstance(image, np.ndarray):
        return f"array {image.dtype} {tuple(image.shape)}"
    name = getattr(image, "name", None)
    return f"file {name}" if isinstance(name, str) else type(image).__name__


def _fetch_url(url: str, options: ImageOptions) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "beit-client"})
    with urllib.request.urlopen(request, timeout=options.url_timeout) as response:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > options.max_url_bytes:
            raise ValueError(f"the URL declares {declared} bytes, over the limit of {options.max_url_bytes}")
        # One byte past the limit tells an oversized body from one exactly at it, without reading it all.
        data = cast(bytes, response.read(options.max_url_bytes + 1))
    if len(data) > options.max_url_bytes:
        raise ValueError(f"the URL answered more than {options.max_url_bytes} bytes")
    return data


def _array_to_pil(array: np.ndarray[Any, Any]) -> Image.Image:
    if array.dtype != np.uint8:
        raise ValueError(f"arrays must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(array, mode="L")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array), mode="RGB" if array.shape[2] == 3 else "RGBA")
    raise ValueError(f"arrays must be HxW or HxWxC with C in 1, 3, 4; got shape {array.shape}")


def _encode_pil(image: Image.Image, options: ImageOptions) -> bytes:
    buffer = io.BytesIO()
    if options.encoding == "jpeg":
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(buffer, format="JPEG", quality=options.jpeg_quality)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _read_source(image: ImageInput, options: ImageOptions) -> bytes | Image.Image:
    """Encoded bytes for file-like sources, the PIL image for in-memory ones."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, np.ndarray):
        return _array_to_pil(image)
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if _is_url(image):
        return _fetch_url(cast(str, image), options)
    if isinstance(image, (str, os.PathLike)):
        with open(image, "rb") as file:
            return file.read()
    if hasattr(image, "read"):
        data = image.read()
        if not isinstance(data, bytes):
            raise ValueError("file objects must be opened in binary mode")
        return data
    raise TypeError(f"unsupported image type {type(image).__name__}")


def _reason(error: Exception) -> str:
    """Why reading failed, without the path or URL the error's source already names."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return _reason(error.reason) if isinstance(error.reason, Exception) else str(error.reason)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return " ".join(str(error).split()) or type(error).__name__


def _invalid(error: Exception, index: int, image: ImageInput) -> InvalidImageError:
    return InvalidImageError(_reason(error), index=index, source=describe_image(image))


def encode_image(image: ImageInput, index: int, options: ImageOptions) -> bytes:
    """The bytes sent as IMAGE: files, bytes and URLs as they are, in-memory images encoded."""
    try:
        source = _read_source(image, options)
        return _encode_pil(source, options) if isinstance(source, Image.Image) else source
    except (OSError, ValueError, TypeError, urllib.error.URLError) as e:
        raise _invalid(e, index, image) from e


def preprocess_on_client(
    image: ImageInput, index: int, options: ImageOptions, config: PreprocessingConfig
) -> npt.NDArray[np.uint8]:
    """The PIXEL_VALUES row for one image (uint8: beit_model rescales and normalizes), computed as the
    server's preprocessor would: encoded sources through the same decoder and the server's default pixel
    limit, in-memory images as the RGB image a lossless encoding would decode to."""
    from beit_preprocessing import DEFAULT_MAX_PIXELS, preprocess_bytes, preprocess_image
    from beit_preprocessing import InvalidImageError as UnprocessableImage

    try:
        source = _read_source(image, options)
        if isinstance(source, Image.Image):
            return preprocess_image(source, config)
        return preprocess_bytes(source, config, max_pixels=DEFAULT_MAX_PIXELS)
    except (OSError, ValueError, TypeError, urllib.error.URLError, UnprocessableImage) as e:
        raise _invalid(e, index, image) from e
