"""The checkpoint and the model repository a benchmark run measures, built once per output folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from loadtest.benchmark.repository import onnx_model

logger = logging.getLogger(__name__)

RANDOM_PREFIX = "random-"


@dataclass(frozen=True)
class Artifacts:
    name: str
    checkpoint: Path | str  # what the HF pipeline loads
    repository: Path  # what the server serves and ONNX Runtime in-process loads

    @property
    def onnx_model(self) -> Path:
        return onnx_model(self.repository)


def prepare(model: str, workdir: Path) -> Artifacts:
    """`random-SIZE` (random_checkpoint.RANDOM_ARCHITECTURES: random weights, the real architecture) or a
    checkpoint (hub id or folder). A random build and the pipeline's checkpoint share the architecture, not
    the weights: speed does not depend on weight values, and the repository then records random_weights
    honestly."""
    from beit_build import build_repository

    workdir.mkdir(parents=True, exist_ok=True)
    repository = workdir / "repository"
    if model.startswith(RANDOM_PREFIX):
        from beit_build.random_checkpoint import save_random_checkpoint

        size = model.removeprefix(RANDOM_PREFIX)
        checkpoint: Path | str = workdir / "checkpoint"
        if not (workdir / "checkpoint" / "config.json").exists():
            save_random_checkpoint(size, workdir / "checkpoint")
        if not onnx_model(repository).exists():
            build_repository(None, repository, random_size=size)
    else:
        checkpoint = model
        if not onnx_model(repository).exists():
            build_repository(model, repository)
    logger.info("benchmarking %s from %s", model, repository)
    return Artifacts(model, checkpoint, repository)
