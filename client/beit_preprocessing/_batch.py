"""Many images at once: a thread pool decodes in parallel (Pillow releases the GIL in decode and resize)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np
import numpy.typing as npt

from beit_preprocessing._config import PreprocessingConfig
from beit_preprocessing._errors import InconsistentSizesError, InvalidImageError
from beit_preprocessing._transforms import Pixels, preprocess_bytes


def preprocess_batch(
    items: Sequence[bytes],
    config: PreprocessingConfig,
    *,
    max_pixels: int,
    executor: Executor | None = None,
) -> list[Pixels | InvalidImageError]:
    """One result per item, in order: float32 [3, H, W], or the item's error in its place."""

    def one(data: bytes) -> Pixels | InvalidImageError:
        try:
            return preprocess_bytes(data, config, max_pixels=max_pixels)
        except InvalidImageError as e:
            return e

    if executor is None or len(items) < 2:
        return [one(data) for data in items]
    return list(executor.map(one, items))


def preprocess_requests(
    images: Sequence[npt.NDArray[np.object_]],
    config: PreprocessingConfig,
    *,
    max_pixels: int,
    executor: Executor | None = None,
) -> list[Pixels | InvalidImageError]:
    """Gather the images of every request (BYTES arrays of any shape, e.g. [n, 1]), preprocess them in one
    parallel pass, and scatter: per request, float32 [n, 3, H, W], or the first failing image's error with
    its index in the request."""
    flat = [[_as_bytes(item) for item in array.reshape(-1)] for array in images]
    results = preprocess_batch(
        [data for request in flat for data in request], config, max_pixels=max_pixels, executor=executor
    )
    answers: list[Pixels | InvalidImageError] = []
    start = 0
    for request in flat:
        answers.append(_stack(results[start : start + len(request)]))
        start += len(request)
    return answers


def _stack(results: Sequence[Pixels | InvalidImageError]) -> Pixels | InvalidImageError:
    pixels: list[Pixels] = []
    for index, result in enumerate(results):
        if isinstance(result, InvalidImageError):
            return type(result)(f"image {index} of the request: {result}")
        pixels.append(result)
    if not pixels:
        return InvalidImageError("the request holds no image")
    shapes = {p.shape for p in pixels}
    if len(shapes) > 1:
        # Only without a center crop or a fixed resize: the output then follows each image's aspect ratio.
        return InconsistentSizesError(
            f"the images of the request preprocess to different shapes {sorted(shapes)}; "
            "send them in separate requests"
        )
    return np.stack(pixels)


def _as_bytes(item: object) -> bytes:
    # Triton hands BYTES tensors over as object arrays of bytes; numpy may hold np.bytes_ instead.
    if isinstance(item, bytes):
        return item
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    return b""
