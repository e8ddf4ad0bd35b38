"""The preprocessor alone, on ~640x480 JPEGs: in-process on one thread (img/s per core, per stage) and
served as the `beit_preprocess` model (Python-backend preprocessing is the usual ensemble bottleneck:
Triton issues 5317, 7650)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from beit_preprocessing import (
    PreprocessingConfig,
    decode_image,
    normalize,
    preprocess_bytes,
    preprocess_image,
)
from beit_repository.names import IMAGE, PIXEL_VALUES, PREPROCESS_MODEL, PROBABILITIES
from loadtest.benchmark.timing import Call, Measurement, closed_loop


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

    def factory(_index: int) -> Call:
        def call() -> int:
            preprocess_bytes(next(cycle), config, max_pixels=max_pixels)
            return 1

        return call

    return closed_loop(factory, duration_s=duration_s, warmup_s=warmup_s)


def stage_costs(
    images: Sequence[bytes], config: PreprocessingConfig, *, max_pixels: int, rounds: int = 3
) -> dict[str, float]:
    """Mean ms per image for decode, resize and crop (to uint8 channels-first pixels), which the preprocessor
    chains (`preprocess_bytes`, exact mode), and the rescale+normalize that beit_model's graph now runs
    (timed here as `normalize`, numpy's lookup of the same values), each on the library's own functions."""
    if not config.do_resize:
        raise ValueError("stage costs need a resizing config")
    height, width = config.output_size
    without_resize = replace(config, do_resize=False)
    totals = {"decode_ms": 0.0, "resize_ms": 0.0, "crop_ms": 0.0, "normalize_in_graph_ms": 0.0}
    count = 0
    for data in list(images) * rounds:
        start = time.perf_counter()
        image = decode_image(data, max_pixels=max_pixels)
        decoded = time.perf_counter()
        resized = image.resize((width, height), config.resample)
        resized_at = time.perf_counter()
        pixels = preprocess_image(resized, without_resize)
        cropped = time.perf_counter()
        normalize(pixels, config)
        done = time.perf_counter()
        totals["decode_ms"] += (decoded - start) * 1000
        totals["resize_ms"] += (resized_at - decoded) * 1000
        totals["crop_ms"] += (cropped - resized_at) * 1000
        totals["normalize_in_graph_ms"] += (done - cropped) * 1000
        count += 1
    return {stage: total / count for stage, total in totals.items()}


def fast_mode_deviation(
    images: Sequence[bytes],
    exact: PreprocessingConfig,
    fast: PreprocessingConfig,
    session: Any,
    *,
    max_pixels: int,
) -> dict[str, float]:
    """What fast mode costs in fidelity on photos: max and mean |Δpixel| against exact mode (normalized
    units), and how often the model's top 5 (as a set) and top 1 agree between the two."""
    exact_pixels = np.stack([preprocess_bytes(data, exact, max_pixels=max_pixels) for data in images])
    fast_pixels = np.stack([preprocess_bytes(data, fast, max_pixels=max_pixels) for data in images])
    difference = np.abs(normalize(exact_pixels, exact) - normalize(fast_pixels, fast))
    top = {
        mode: np.argsort(-session.run([PROBABILITIES], {PIXEL_VALUES: pixels})[0], axis=1)[:, :5]
        for mode, pixels in (("exact", exact_pixels), ("fast", fast_pixels))
    }
    return {
        "images": len(images),
        "max_abs_pixel_diff": float(difference.max()),
        "mean_abs_pixel_diff": float(difference.mean()),
        "top5_agreement": float(
            np.mean([set(a) == set(b) for a, b in zip(top["exact"], top["fast"], strict=True)])
        ),
        "top1_agreement": float(np.mean(top["exact"][:, 0] == top["fast"][:, 0])),
    }


def served(
    url: str,
    images: Sequence[bytes],
    *,
    batch_size: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    cpu_clock: Callable[[], float] | None = None,
) -> Measurement:
    """`beit_preprocess` over HTTP, `batch_size` images per request from `concurrency` clients; the
    pixels come back as binary tensors. Includes the transfer of 150 KB of uint8 per 224x224 image.
    With the server's CPU clock, the measurement also carries the server's CPU time, so img/s per core
    excludes this load generator, which shares the machine."""
    import tritonclient.http as httpclient

    address = url.split("://", 1)[-1]

    def factory(index: int) -> Call:
        client = httpclient.InferenceServerClient(address, connection_timeout=60, network_timeout=60)
        rotation = itertools.cycle(range(len(images)))
        for _ in range(index):
            next(rotation)

        def call() -> int:
            batch = np.array([[images[next(rotation)]] for _ in range(batch_size)], dtype=np.object_)
            tensor = httpclient.InferInput(IMAGE, list(batch.shape), "BYTES")
            tensor.set_data_from_numpy(batch, binary_data=True)
            output = httpclient.InferRequestedOutput(PIXEL_VALUES, binary_data=True)
            client.infer(PREPROCESS_MODEL, [tensor], outputs=[output]).as_numpy(PIXEL_VALUES)
            return batch_size

        return call

    return closed_loop(
        factory,
        concurrency=concurrency,
        duration_s=duration_s,
        warmup_s=warmup_s,
        batch_size=batch_size,
        cpu_clock=cpu_clock,
    )


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
