"""`beit-build check-engine`: the repository's model.onnx through an ONNX Runtime engine against PyTorch, on
images preprocessed exactly as the server does (the repository's own parameters)."""

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
from beit_build.repository import ONNX_PATH, read_parameters
from beit_preprocessing import DEFAULT_MAX_PIXELS, PreprocessingConfig, decode_image, preprocess_image
from beit_repository.names import NETWORK_OUTPUTS, PIXEL_VALUES, PROBABILITIES

logger = logging.getLogger(__name__)

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
    images: int
    top1_agreement: float
    top5_agreement: float
    max_abs_probability_diff: float


def check_engine(
    repository: Path,
    *,
    engine: str = "onnx",
    model: str | Path | None = None,
    images: Sequence[Path] = (),
    batch_size: int = 8,
) -> EngineCheck:
    """`model` defaults to the checkpoint the repository was built from; `images` to synthetic ones."""
    parameters = read_parameters(repository)
    if model is None:
        if json.loads(parameters["random_weights"]):
            raise EngineCheckError("the repository holds random weights that were not saved: pass --model")
        model = json.loads(parameters["checkpoint"])
    session = _session(repository / ONNX_PATH, engine)
    config = PreprocessingConfig.from_parameters(parameters)
    pixels = np.stack([preprocess_image(image, config) for image in _images(images, batch_size)])
    logger.info("running %d images through %s", len(pixels), ", ".join(session.get_providers()))
    (onnx_probabilities,) = session.run([PROBABILITIES], {PIXEL_VALUES: pixels})
    with torch.no_grad():
        reference = NetworkOutputs(load_checkpoint(model)).eval()(torch.from_numpy(pixels))
    torch_probabilities = reference[NETWORK_OUTPUTS.index(PROBABILITIES)].numpy()
    return _compare(engine, tuple(session.get_providers()), onnx_probabilities, torch_probabilities)


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
        return [decode_image(path.read_bytes(), max_pixels=DEFAULT_MAX_PIXELS) for path in paths]
    rng = np.random.default_rng(0)
    # Smooth random images at odd sizes, so resizing is exercised as well as the network.
    return [
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
            (320 + 7 * i, 240), Image.Resampling.BICUBIC
        )
        for i in range(count)
    ]


def _compare(
    engine: str,
    providers: tuple[str, ...],
    actual: npt.NDArray[np.float32],
    expected: npt.NDArray[np.float32],
) -> EngineCheck:
    top5_actual = np.argsort(-actual, axis=-1)[:, :5]
    top5_expected = np.argsort(-expected, axis=-1)[:, :5]
    top5_overlap = [len(set(a) & set(e)) / len(e) for a, e in zip(top5_actual, top5_expected, strict=True)]
    return EngineCheck(
        engine=engine,
        providers=providers,
        images=len(actual),
        top1_agreement=float(np.mean(top5_actual[:, 0] == top5_expected[:, 0])),
        top5_agreement=float(np.mean(top5_overlap)),
        max_abs_probability_diff=float(np.max(np.abs(actual - expected))),
    )
