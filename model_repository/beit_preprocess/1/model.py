"""Encoded image bytes -> PIXEL_VALUES: uint8 pixels, resized and cropped exactly as the checkpoint's image
processor does (beit_model's graph rescales and normalizes them).

Under dynamic batching `execute` receives several requests; their images are preprocessed together on one
thread pool and each request gets its own answer. A bad image fails its own request (INVALID_ARG) only.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import triton_python_backend_utils as pb_utils
from PIL import Image

from beit_preprocessing import (
    DEFAULT_MAX_PIXELS,
    InvalidImageError,
    Pixels,
    PreprocessingConfig,
    preprocess_requests,
)
from beit_repository.names import IMAGE, PIXEL_VALUES, PREPROCESS_MODEL

IMAGE_BLOCKS_CACHED = 64
"""Pillow's PILLOW_BLOCKS_MAX for this process. By default Pillow frees every image's memory, and glibc hands
blocks this large back to the kernel, so each decoded image page-faults its memory in anew: kept, the stub
spent 7% less CPU per 640x480 JPEG (README.md, "Serving overhead"). A freed block is resized to the next
image's needs when reused, so the cache holds about the largest recent images' memory."""


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        # Pillow's own path to its C core (PIL/Image.py), which it does not re-export for type checkers.
        Image.core.set_blocks_max(IMAGE_BLOCKS_CACHED)  # type: ignore[attr-defined]
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        try:
            self._config = PreprocessingConfig.from_parameters(parameters)
        except ValueError as e:
            # The message names beit-build, which writes the checkpoint's parameters into this config.
            raise pb_utils.TritonModelException(f"{PREPROCESS_MODEL}: {e}") from e
        self._max_pixels = _positive_int(parameters, "max_pixels", DEFAULT_MAX_PIXELS)
        threads = _positive_int(parameters, "decode_threads", 0, allow_zero=True)
        self._threads = threads or os.cpu_count() or 1
        self._executor = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="beit-decode")

    def execute(self, requests: list[Any]) -> list[Any]:
        images = [pb_utils.get_input_tensor_by_name(request, IMAGE).as_numpy() for request in requests]
        answers = preprocess_requests(
            images, self._config, max_pixels=self._max_pixels, executor=self._executor, workers=self._threads
        )
        return [_response(answer) for answer in answers]

    def finalize(self) -> None:
        self._executor.shutdown(wait=True)


def _response(answer: Pixels | InvalidImageError) -> Any:
    if isinstance(answer, InvalidImageError):
        return pb_utils.InferenceResponse(
            error=pb_utils.TritonError(str(answer), pb_utils.TritonError.INVALID_ARG)
        )
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(PIXEL_VALUES, answer)])


def _positive_int(parameters: dict[str, str], key: str, default: int, *, allow_zero: bool = False) -> int:
    text = parameters.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or (value == 0 and not allow_zero):
        raise pb_utils.TritonModelException(
            f"{PREPROCESS_MODEL}: parameter {key!r} must be a positive integer"
        )
    return value
