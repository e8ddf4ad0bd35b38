"""The same machine without a server: the Hugging Face pipeline a user would otherwise run, and the
exported ONNX model in ONNX Runtime in-process (the engine's ceiling for anything served on top of it)."""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image

from beit_preprocessing import Pixels, PreprocessingConfig, preprocess_bytes
from beit_repository.names import PIXEL_VALUES, PROBABILITIES
from loadtest.benchmark.timing import Call, Measurement, closed_loop


def hf_pipeline(
    checkpoint: str | Path, images: Sequence[bytes], *, duration_s: float, warmup_s: float
) -> Measurement:
    """`pipeline("image-classification")` one image per call, with the checkpoint's own image processor
    (the PIL backend: the torchvision one needs torchvision), timed from encoded bytes like the server."""
    from transformers import BeitImageProcessorPil, pipeline

    classifier = pipeline(
        "image-classification",
        model=str(checkpoint),
        image_processor=BeitImageProcessorPil.from_pretrained(checkpoint),
        device="cpu",
    )
    cycle = itertools.cycle(images)

    def factory(_index: int) -> Call:
        def call() -> int:
            classifier(Image.open(io.BytesIO(next(cycle))), top_k=5)
            return 1

        return call

    return closed_loop(factory, duration_s=duration_s, warmup_s=warmup_s)


def onnx_session(model_path: Path, *, threads: int = 0) -> onnxruntime.InferenceSession:
    """ONNX Runtime's defaults (all cores, full graph optimization), as the served model's ORT runs them;
    `threads` caps the intra-op threads."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


def onnx_batches(
    model_path: Path,
    pixels: Sequence[Pixels],
    batch_sizes: Sequence[int],
    *,
    duration_s: float,
    warmup_s: float,
) -> list[Measurement]:
    """Throughput and latency of the model alone, already-preprocessed inputs, per batch size."""
    session = onnx_session(model_path)
    results = []
    for batch_size in batch_sizes:
        batch = np.stack([pixels[i % len(pixels)] for i in range(batch_size)])

        def factory(_index: int, batch: Pixels = batch) -> Call:
            def call() -> int:
                session.run([PROBABILITIES], {PIXEL_VALUES: batch})
                return len(batch)

            return call

        results.append(closed_loop(factory, duration_s=duration_s, warmup_s=warmup_s, batch_size=batch_size))
    return results


def onnx_end_to_end(
    model_path: Path,
    images: Sequence[bytes],
    config: PreprocessingConfig,
    *,
    max_pixels: int,
    duration_s: float,
    warmup_s: float,
    threads: int = 0,
) -> Measurement:
    """One image from encoded bytes to probabilities in-process: the latency a served request adds to.
    With `threads=1` it is one process per core's share, and the measurement carries this process's CPU
    time: images per CPU-second in-process, which serving's CPU per image is compared with."""
    session = onnx_session(model_path, threads=threads)
    cycle = itertools.cycle(images)

    def factory(_index: int) -> Call:
        def call() -> int:
            pixels = preprocess_bytes(next(cycle), config, max_pixels=max_pixels)
            session.run([PROBABILITIES], {PIXEL_VALUES: pixels[None]})
            return 1

        return call

    return closed_loop(
        factory,
        duration_s=duration_s,
        warmup_s=warmup_s,
        cpu_clock=time.process_time if threads == 1 else None,
    )
