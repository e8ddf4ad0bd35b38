"""Encoded image bytes -> PIXEL_VALUES: uint8 pixels, resized and cropped exactly as the checkpoint's image
processor does (beit_model's graph rescales and normalizes them).

Under dynamic batching `execute` receives several requests; their images are preprocessed together on one
thread pool and each request gets its own answer. A bad image fails its own request (INVALID_ARG) only.
"""

from __future__ import annotations

import ctypes
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import triton_python_backend_utils as pb_utils

from beit_preprocessing import (
    DEFAULT_MAX_PIXELS,
    InvalidImageError,
    Pixels,
    PreprocessingConfig,
    preprocess_requests,
)
from beit_repository.names import IMAGE, PIXEL_VALUES, PREPROCESS_MODEL

# glibc's mallopt parameters (malloc.h). A decoded photo (1.2 MB for 640x480) is past glibc's default 128 KB
# mmap threshold. In this stub glibc kept handing such buffers back to the kernel, and each image faulted its
# memory in anew: 280 page faults and 0.9 ms of kernel time per 640x480 JPEG, against none for the same code
# in-process (README.md, "Serving overhead"). With the limits set outright, buffers up to glibc's largest
# threshold come from the heap, and freed heap memory stays with the process, up to
# MALLOC_TRIM_THRESHOLD_BYTES per glibc arena (one per decoding thread): the stub's memory under load was
# unchanged (57 MB).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MALLOC_MMAP_THRESHOLD_BYTES = 32 << 20
MALLOC_TRIM_THRESHOLD_BYTES = 128 << 20


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        _keep_freed_image_memory()
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


def _keep_freed_image_memory() -> None:
    libc = ctypes.CDLL("libc.so.6")
    for parameter, value in (
        (_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES),
        (_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES),
    ):
        if libc.mallopt(parameter, value) != 1:
            # Slower, still correct: serve on.
            pb_utils.Logger.log_warn(f"{PREPROCESS_MODEL}: glibc refused mallopt({parameter}, {value})")


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
