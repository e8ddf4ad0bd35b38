"""Checkpoint in, built model repository out: the steps of `beit-build`, in order."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from beit_build.checkpoint import load_checkpoint
from beit_build.export import export_onnx, graph_dims, onnx_node_count, prepare_for_export
from beit_build.families import Checkpoint
from beit_build.labels import read_labels
from beit_build.quantize import INT8, QUANTIZATIONS, quantize_int8
from beit_build.random_checkpoint import random_checkpoint_name, save_random_checkpoint
from beit_build.repository import (
    INT8_ONNX_PATH,
    LABELS_PATH,
    NETWORK_CONFIG_PATH,
    ONNX_PATH,
    atomic_path,
    prepare,
    read_parameters,
    remove_stale_engines,
    write_configs,
    write_labels,
)
from beit_build.verify import verify_onnx
from beit_repository.names import DEFAULT_REPOSITORY

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    repository: Path
    onnx_path: Path
    int8_onnx_path: Path | None
    """model.int8.onnx when the build quantized (--quantize int8)."""
    labels_path: Path
    config_paths: tuple[Path, ...]
    checkpoint: str
    random_weights: bool
    num_labels: int
    embedding_size: int
    multi_label: bool
    resolution: tuple[int, int]
    onnx_nodes: int
    max_abs_diff: dict[str, float]


def build_repository(
    model: str | Path | None,
    repository: Path = Path(DEFAULT_REPOSITORY),
    *,
    labels: Path | None = None,
    random_size: str | None = None,
    quantize: str | None = None,
) -> BuildResult:
    """Export `model` (hub id or local folder) into `repository`, or a random BEiT of `random_size`
    ("tiny", "base", "large"; then `model` must be None); `quantize="int8"` writes model.int8.onnx too."""
    repository = Path(repository)
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    if random_size is None:
        if model is None:
            raise ValueError("give a checkpoint (hub id or folder) or a random size")
        return _build(load_checkpoint(model), repository, labels, quantize, random_weights=False)
    if model is not None:
        raise ValueError(f"give a checkpoint or a random size, not both ({model!r}, {random_size!r})")
    # Saved and loaded back like a download, so the random build exercises the real loading path.
    with tempfile.TemporaryDirectory(prefix=f"beit-random-{random_size}-") as directory:
        save_random_checkpoint(random_size, Path(directory))
        checkpoint = load_checkpoint(directory, name=random_checkpoint_name(random_size))
        return _build(checkpoint, repository, labels, quantize, random_weights=True)


def checkpoint_parameters(checkpoint: Checkpoint, *, random_weights: bool) -> dict[str, str]:
    """What every config of the repository records about the checkpoint, as JSON text."""
    return {
        "checkpoint": json.dumps(checkpoint.name),
        "random_weights": json.dumps(random_weights),
        "num_labels": json.dumps(checkpoint.num_labels),
        "embedding_size": json.dumps(checkpoint.embedding_size),
        "multi_label": json.dumps(checkpoint.multi_label),
        **checkpoint.preprocessing.to_parameters(),
    }


def _build(
    checkpoint: Checkpoint,
    repository: Path,
    labels_file: Path | None,
    quantize: str | None,
    *,
    random_weights: bool,
) -> BuildResult:
    labels = (
        read_labels(labels_file, expected=checkpoint.num_labels) if labels_file else list(checkpoint.labels)
    )
    resolution = checkpoint.resolution
    prepare(repository)
    onnx_path = repository / ONNX_PATH
    with atomic_path(onnx_path) as temporary:
        with _step(f"exporting ONNX at {resolution[0]}x{resolution[1]} to {onnx_path}"):
            export_onnx(prepare_for_export(checkpoint), temporary, resolution)
        with _step("verifying the ONNX graph with ONNX Runtime against PyTorch"):
            max_abs_diff = verify_onnx(temporary, checkpoint)
        onnx_nodes = onnx_node_count(temporary)
        dims = graph_dims(temporary)
    remove_stale_engines(repository)
    int8_onnx_path = repository / INT8_ONNX_PATH if quantize == INT8 else None
    if int8_onnx_path is not None:
        with atomic_path(int8_onnx_path) as temporary, _step(f"quantizing to int8 into {int8_onnx_path}"):
            quantize_int8(onnx_path, temporary)
    with _step(f"writing labels and the completed configs into {repository}"):
        labels_path = write_labels(repository, labels)
        config_paths = write_configs(
            repository,
            checkpoint_parameters(checkpoint, random_weights=random_weights),
            dims,
            checkpoint=checkpoint.name,
        )
    if random_weights:
        logger.warning(
            "%s holds RANDOM weights (%s): its predictions are meaningless", repository, checkpoint.name
        )
    return BuildResult(
        repository=repository,
        onnx_path=onnx_path,
        int8_onnx_path=int8_onnx_path,
        labels_path=labels_path,
        config_paths=tuple(config_paths),
        checkpoint=checkpoint.name,
        random_weights=random_weights,
        num_labels=checkpoint.num_labels,
        embedding_size=checkpoint.embedding_size,
        multi_label=checkpoint.multi_label,
        resolution=resolution,
        onnx_nodes=onnx_nodes,
        max_abs_diff=max_abs_diff,
    )


def is_built(repository: Path, checkpoint: str, *, quantize: str | None = None) -> bool:
    """Whether `repository` holds a complete build of `checkpoint` (hub id, folder or random-SIZE), with
    model.int8.onnx when `quantize` asks for it."""
    repository = Path(repository)
    artifacts = [ONNX_PATH, LABELS_PATH, NETWORK_CONFIG_PATH, *([INT8_ONNX_PATH] if quantize == INT8 else [])]
    if not all((repository / path).is_file() for path in artifacts):
        return False
    built = read_parameters(repository).get("checkpoint")
    return built is not None and json.loads(built) == checkpoint


class _step:
    """Logs a long step's start and its duration."""

    def __init__(self, description: str) -> None:
        self.description = description

    def __enter__(self) -> None:
        logger.info("%s ...", self.description)
        self.start = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            logger.info("%s: done in %.1f s", self.description, time.perf_counter() - self.start)
