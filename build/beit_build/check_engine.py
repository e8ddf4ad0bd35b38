"""`beit-build check-engine`: the repository's model.onnx through an ONNX Runtime engine against PyTorch, or
with `int8`, its model.int8.onnx against model.onnx in fp32 (the question before serving the int8 variant),
on images preprocessed exactly as the server does (the repository's own parameters)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime
import torch
from PIL import Image

from beit_build.checkpoint import load_checkpoint
from beit_build.errors import EngineCheckError
from beit_build.export import NetworkOutputs
from beit_build.repository import INT8_ONNX_PATH, ONNX_PATH, read_parameters
from beit_client.cli import collect_sources
from beit_preprocessing import (
    DEFAULT_MAX_PIXELS,
    Pixels,
    PreprocessingConfig,
    decode_image,
    normalize,
    preprocess_image,
)
from beit_repository.names import NETWORK_OUTPUTS, PIXEL_VALUES, PROBABILITIES

logger = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]
PYTORCH = "PyTorch"
FP32_ONNX = "fp32 model.onnx"

ProviderList = list[str | tuple[str, dict[str, object]]]
ENGINES: dict[str, ProviderList] = {
    "onnx": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    # As config.pbtxt deploys it: TensorRT in FP16, unsupported nodes on CUDA.
    "tensorrt": [
        ("TensorrtExecutionProvider", {"trt_fp16_enable": True}),
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ],
}


@dataclass(frozen=True)
class EngineCheck:
    engine: str
    providers: tuple[str, ...]
    reference: str
    """What the engine was compared with: PYTORCH, or FP32_ONNX for the int8 model."""
    images: int
    top1_agreement: float
    top5_agreement: float
    max_abs_probability_diff: float
    reference_mean_top1: float
    """The reference's mean top-1 probability: how much an agreement says (near 1 / labels, the answers are
    coin flips between near-equal classes, as with random weights)."""


def check_engine(
    repository: Path,
    *,
    engine: str = "onnx",
    model: str | Path | None = None,
    images: Sequence[Path] = (),
    batch_size: int = 8,
    int8: bool = False,
) -> EngineCheck:
    """`model` defaults to the checkpoint the repository was built from; `images` (files or folders, walked
    for image files) to synthetic ones. With `int8`, model.int8.onnx on `engine` against model.onnx on ONNX
    Runtime's CPU provider: no PyTorch checkpoint is needed, so random-weight builds can be checked too."""
    parameters = read_parameters(repository)
    config = PreprocessingConfig.from_parameters(parameters)
    pixels = np.stack([preprocess_image(image, config) for image in _images(images, batch_size)])
    if int8:
        if model is not None:
            raise EngineCheckError("the int8 model is compared with model.onnx, not with a checkpoint")
        int8_path = repository / INT8_ONNX_PATH
        if not int8_path.is_file():
            raise EngineCheckError(f"{int8_path} is missing: build with beit-build --quantize int8")
        session = _session(int8_path, engine)
        reference_name, expected = FP32_ONNX, _probabilities(_session(repository / ONNX_PATH, "onnx"), pixels)
    else:
        if model is None:
            if json.loads(parameters["random_weights"]):
                raise EngineCheckError(
                    "the repository holds random weights that were not saved: pass --model"
                )
            model = json.loads(parameters["checkpoint"])
        session = _session(repository / ONNX_PATH, engine)
        reference_name, expected = PYTORCH, _torch_probabilities(model, normalize(pixels, config))
    return _compare(
        engine, tuple(session.get_providers()), reference_name, _probabilities(session, pixels), expected
    )


def _probabilities(session: onnxruntime.InferenceSession, pixels: Pixels) -> Array:
    logger.info("running %d images through %s", len(pixels), ", ".join(session.get_providers()))
    (probabilities,) = session.run([PROBABILITIES], {PIXEL_VALUES: pixels})
    return np.asarray(probabilities, dtype=np.float32)


def _torch_probabilities(model: str | Path, normalized: Array) -> Array:
    with torch.no_grad():
        outputs = NetworkOutputs(load_checkpoint(model)).eval()(torch.from_numpy(normalized))
    return np.asarray(outputs[NETWORK_OUTPUTS.index(PROBABILITIES)].numpy(), dtype=np.float32)


def _session(path: Path, engine: str) -> onnxruntime.InferenceSession:
    if engine not in ENGINES:
        raise EngineCheckError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    providers = ENGINES[engine]
    wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
    available = onnxruntime.get_available_providers()
    if wanted not in available:
        raise EngineCheckError(f"{wanted} is not available in this onnxruntime ({', '.join(available)})")
    session = onnxruntime.InferenceSession(str(path), providers=providers)
    if session.get_providers()[0] != wanted:
        raise EngineCheckError(
            f"{wanted} failed to initialize; the session runs on {session.get_providers()}"
        )
    return session


def _images(paths: Sequence[Path], count: int) -> list[Image.Image]:
    if paths:
        files = collect_sources([str(path) for path in paths])
        if not files:
            raise EngineCheckError(f"no image files in {', '.join(str(path) for path in paths)}")
        return [decode_image(Path(file).read_bytes(), max_pixels=DEFAULT_MAX_PIXELS) for file in files]
    rng = np.random.default_rng(0)
    # Smooth random images at odd sizes, so resizing is exercised as well as the network.
    return [
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
            (320 + 7 * i, 240), Image.Resampling.BICUBIC
        )
        for i in range(count)
    ]


def _compare(
    engine: str, providers: tuple[str, ...], reference: str, actual: Array, expected: Array
) -> EngineCheck:
    top5_actual = np.argsort(-actual, axis=-1)[:, :5]
    top5_expected = np.argsort(-expected, axis=-1)[:, :5]
    top5_overlap = [len(set(a) & set(e)) / len(e) for a, e in zip(top5_actual, top5_expected, strict=True)]
    return EngineCheck(
        engine=engine,
        providers=providers,
        reference=reference,
        images=len(actual),
        top1_agreement=float(np.mean(top5_actual[:, 0] == top5_expected[:, 0])),
        top5_agreement=float(np.mean(top5_overlap)),
        max_abs_probability_diff=float(np.max(np.abs(actual - expected))),
        reference_mean_top1=float(np.mean(np.max(expected, axis=-1))),
    )
