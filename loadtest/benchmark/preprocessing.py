"""The preprocessor alone, on ~640x480 JPEGs: in-process on one thread (img/s per core, per stage) and
served as the `beit_preprocess` model (Python-backend preprocessing is the usual ensemble bottleneck:
Triton issues 5317, 7650)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from beit_preprocessing import PreprocessingConfig, decode_image, preprocess_bytes, preprocess_image
from loadtest.benchmark.timing import Measurement, closed_loop

PREPROCESS_MODEL = "beit_preprocess"


def in_process(
    images: Sequence[bytes],
    config: PreprocessingConfig,
    *,
    max_pixels: int,
    duration_s: float,
    warmup_s: float,
) -> Measurement:
    """One thread, one image per call: images_per_s is img/s per core."""
    cycle = itertools.cycle(images)

    def factory(_index: int):
        def call() -> int:
            preprocess_bytes(next(cycle), config, max_pixels=max_pixels)
            return 1

        return call

    return closed_loop(factory, duration_s=duration_s, warmup_s=warmup_s)


def stage_costs(
    images: Sequence[bytes], config: PreprocessingConfig, *, max_pixels: int, rounds: int = 3
) -> dict[str, float]:
    """Mean ms per image for decode, resize and rescale+normalize (exact mode), each stage timed on the
    library's own functions: the stages are what `preprocess_bytes` chains."""
    if not config.do_resize:
        raise ValueError("stage costs need a resizing config")
    height, width = config.output_size
    without_resize = replace(config, do_resize=False)
    totals = {"decode_ms": 0.0, "resize_ms": 0.0, "normalize_ms": 0.0}
    count = 0
    for data in list(images) * rounds:
        start = time.perf_counter()
        image = decode_image(data, max_pixels=max_pixels)
        decoded = time.perf_counter()
        resized = image.resize((width, height), config.resample)
        resized_at = time.perf_counter()
        preprocess_image(resized, without_resize)
        done = time.perf_counter()
        totals["decode_ms"] += (decoded - start) * 1000
        totals["resize_ms"] += (resized_at - decoded) * 1000
        totals["normalize_ms"] += (done - resized_at) * 1000
        count += 1
    return {stage: total / count for stage, total in totals.items()}


def served(
    url: str,
    images: Sequence[bytes],
    *,
    batch_size: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
) -> Measurement:
    """`beit_preprocess` over HTTP, `batch_size` images per request from `concurrency` clients; the
    pixels come back as binary tensors. Includes the transfer of 600 KB of float32 per 224x224 image."""
    import tritonclient.http as httpclient

    address = url.split("://", 1)[-1]

    def factory(index: int):
        client = httpclient.InferenceServerClient(address, connection_timeout=60, network_timeout=60)
        rotation = itertools.cycle(range(len(images)))
        for _ in range(index):
            next(rotation)

        def call() -> int:
            batch = np.array([[images[next(rotation)]] for _ in range(batch_size)], dtype=np.object_)
            tensor = httpclient.InferInput("IMAGE", list(batch.shape), "BYTES")
            tensor.set_data_from_numpy(batch, binary_data=True)
            output = httpclient.InferRequestedOutput("PIXEL_VALUES", binary_data=True)
            client.infer(PREPROCESS_MODEL, [tensor], outputs=[output]).as_numpy("PIXEL_VALUES")
            return batch_size

        return call

    return closed_loop(
        factory, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s, batch_size=batch_size
    )


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
