"""Checkpoint in, built model repository out: the steps of `beit-build`, in order."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from beit_build.checkpoint import load_checkpoint
from beit_build.export import export_onnx, graph_dims, onnx_node_count, prepare_for_export, takes_uint8_pixels
from beit_build.families import Checkpoint
from beit_build.labels import read_labels
from beit_build.onnx_files import external_data_files, model_files, staged_model
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
from beit_repository.names import DEFAULT_REPOSITORY, ONNX_DATA_FILES_PARAMETER

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
    model_files: tuple[Path, ...] = ()
    """model.onnx and its external data file, if it has one."""
    durations_s: dict[str, float] = field(default_factory=dict)
    """Seconds per step: export, verify, configs."""


def build_repository(
    model: str | Path | None,
    repository: Path = Path(DEFAULT_REPOSITORY),
    *,
    labels: Path | None = None,
    random_size: str | None = None,
    external_data: bool = False,
    quantize: str | None = None,
) -> BuildResult:
    """Export `model` (hub id or local folder) into `repository`, or a random checkpoint of `random_size`
    (random_checkpoint.RANDOM_ARCHITECTURES; then `model` must be None). The tensors go to an external data
    file beside model.onnx when `external_data` is set, and always above protobuf's 2 GiB;
    `quantize="int8"` writes model.int8.onnx too."""
    repository = Path(repository)
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    if random_size is None:
        if model is None:
            raise ValueError("give a checkpoint (hub id or folder) or a random size")
        return _build(
            load_checkpoint(model),
            repository,
            labels,
            quantize,
            random_weights=False,
            external_data=external_data,
        )
    if model is not None:
        raise ValueError(f"give a checkpoint or a random size, not both ({model!r}, {random_size!r})")
    # Saved and loaded back like a download, so the random build exercises the real loading path.
    with tempfile.TemporaryDirectory(prefix=f"beit-random-{random_size}-") as directory:
        save_random_checkpoint(random_size, Path(directory))
        checkpoint = load_checkpoint(directory, name=random_checkpoint_name(random_size))
        return _build(
            checkpoint, repository, labels, quantize, random_weights=True, external_data=external_data
        )


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


def model_files_parameters(onnx_path: Path) -> dict[str, str]:
    """The external data files of the model.onnx in place, for the readers that cannot parse it."""
    return {ONNX_DATA_FILES_PARAMETER: json.dumps([path.name for path in external_data_files(onnx_path)])}


def _build(
    checkpoint: Checkpoint,
    repository: Path,
    labels_file: Path | None,
    quantize: str | None,
    *,
    random_weights: bool,
    external_data: bool,
) -> BuildResult:
    labels = (
        read_labels(labels_file, expected=checkpoint.num_labels) if labels_file else list(checkpoint.labels)
    )
    resolution = checkpoint.resolution
    prepare(repository)
    onnx_path = repository / ONNX_PATH
    durations: dict[str, float] = {}
    # model.onnx and its data file (if any) are written and verified in a staging directory beside it, then
    # moved into place together (onnx_files).
    with staged_model(onnx_path) as staged:
        with _step(f"exporting ONNX at {resolution[0]}x{resolution[1]} to {onnx_path}", durations, "export"):
            export_onnx(prepare_for_export(checkpoint), staged, resolution, external_data=external_data)
        with _step("verifying the ONNX graph with ONNX Runtime against PyTorch", durations, "verify"):
            max_abs_diff = verify_onnx(staged, checkpoint)
        onnx_nodes = onnx_node_count(staged)
        dims = graph_dims(staged)
    remove_stale_engines(repository)
    int8_onnx_path = repository / INT8_ONNX_PATH if quantize == INT8 else None
    if int8_onnx_path is not None:
        with (
            atomic_path(int8_onnx_path) as temporary,
            _step(f"quantizing to int8 into {int8_onnx_path}", durations, "quantize"),
        ):
            quantize_int8(onnx_path, temporary)
    with _step(f"writing labels and the completed configs into {repository}", durations, "configs"):
        labels_path = write_labels(repository, labels)
        config_paths = write_configs(
            repository,
            {
                **checkpoint_parameters(checkpoint, random_weights=random_weights),
                **model_files_parameters(onnx_path),
            },
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
        model_files=tuple(model_files(onnx_path)),
        durations_s=durations,
    )


def is_built(repository: Path, checkpoint: str, *, quantize: str | None = None) -> bool:
    """Whether `repository` holds a complete build of `checkpoint` (hub id, folder or random-SIZE),
    model.onnx's external data file included, with model.int8.onnx when `quantize` asks for it."""
    repository = Path(repository)
    artifacts = [ONNX_PATH, LABELS_PATH, NETWORK_CONFIG_PATH, *([INT8_ONNX_PATH] if quantize == INT8 else [])]
    if not all((repository / path).is_file() for path in artifacts):
        return False
    try:
        files = model_files(repository / ONNX_PATH)
    except (ValueError, DecodeError):  # not an ONNX model, or one whose data lies outside its directory
        return False
    if not all(path.is_file() for path in files) or not takes_uint8_pixels(repository / ONNX_PATH):
        return False
    built = read_parameters(repository).get("checkpoint")
    return built is not None and json.loads(built) == checkpoint


class _step:
    """Logs a long step's start and its duration, and records the duration in `durations[key]`."""

    def __init__(self, description: str, durations: dict[str, float], key: str) -> None:
        self.description = description
        self.durations = durations
        self.key = key

    def __enter__(self) -> None:
        logger.info("%s ...", self.description)
        self.start = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        if exc_info[0] is None:
            self.durations[self.key] = time.perf_counter() - self.start
            logger.info("%s: done in %.1f s", self.description, self.durations[self.key])
