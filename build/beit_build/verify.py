"""The exported graph run by ONNX Runtime against the untouched PyTorch model, given the pixels the
checkpoint's image processor would: the graph's own normalization is checked with the network."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from beit_build.errors import VerificationError
from beit_build.export import NetworkOutputs
from beit_build.families import Checkpoint
from beit_preprocessing import normalize
from beit_repository.names import NETWORK_OUTPUTS, PIXEL_VALUES

logger = logging.getLogger(__name__)

TOLERANCE = 1e-4


def verify_onnx(
    path: Path,
    checkpoint: Checkpoint,
    *,
    batch_size: int = 2,
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> dict[str, float]:
    """Max |ONNX - PyTorch| per output on a random batch; raises VerificationError above `tolerance`."""
    pixels = np.random.default_rng(seed).integers(0, 256, (batch_size, 3, *checkpoint.resolution), np.uint8)
    with torch.no_grad():
        expected = NetworkOutputs(checkpoint).eval()(
            torch.from_numpy(normalize(pixels, checkpoint.preprocessing))
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run(list(NETWORK_OUTPUTS), {PIXEL_VALUES: pixels})
    differences = {
        name: float(np.max(np.abs(got - want.numpy())))
        for name, got, want in zip(NETWORK_OUTPUTS, actual, expected, strict=True)
    }
    for name, difference in differences.items():
        logger.info("max |ONNX - PyTorch| %s: %.3g", name, difference)
    failed = {name: difference for name, difference in differences.items() if not difference <= tolerance}
    if failed:
        raise VerificationError(f"ONNX output differs from PyTorch by more than {tolerance}: {failed}")
    return differences
