"""Variants of a built model repository, made by editing the parsed model configs (protobuf), never the
text: the generated checkpoint parameters and every other field survive exactly."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from beit_preprocessing import PreprocessingConfig

PREPROCESS_MODEL = "beit_preprocess"
PIXEL_MODEL = "beit_model"


def config_files(repository: Path) -> list[Path]:
    """Every model config: config.pbtxt and the alternatives --model-config-name picks from configs/."""
    return sorted([*repository.glob("*/config.pbtxt"), *repository.glob("*/configs/*.pbtxt")])


def read_config(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def write_config(path: Path, config: model_config_pb2.ModelConfig) -> None:
    path.write_text(text_format.MessageToString(config))


def edited_copy(
    repository: Path, destination: Path, edit: Callable[[Path, model_config_pb2.ModelConfig], bool]
) -> Path:
    """A copy of `repository` (model files hard-linked where possible: model.onnx is large) in which
    `edit` may change each parsed config in place; it returns whether it did."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(repository, destination, copy_function=_link_or_copy)
    for path in config_files(destination):
        config = read_config(path)
        if edit(path, config):
            path.unlink()  # a hard link would write through to the original
            write_config(path, config)
    return destination


def without_dynamic_batching(repository: Path, destination: Path) -> Path:
    """Every model executes each request as it comes: batch size = images per request."""

    def edit(_path: Path, config: model_config_pb2.ModelConfig) -> bool:
        if not config.HasField("dynamic_batching"):
            return False
        config.ClearField("dynamic_batching")
        return True

    return edited_copy(repository, destination, edit)


def with_preprocessor(repository: Path, destination: Path, *, mode: str, instances: int) -> Path:
    """The preprocessor in `mode`, laid out as `instances` processes of one decode thread each: the layout
    that costs the least CPU per image (threads within a process contend for Python's GIL)."""

    def edit(path: Path, config: model_config_pb2.ModelConfig) -> bool:
        if path.parent.name != PREPROCESS_MODEL and path.parent.parent.name != PREPROCESS_MODEL:
            return False
        config.parameters["mode"].string_value = mode
        config.parameters["decode_threads"].string_value = "1"
        for group in config.instance_group:
            group.count = instances
        return True

    return edited_copy(repository, destination, edit)


def model_parameters(repository: Path, model: str) -> dict[str, str]:
    config = read_config(repository / model / "config.pbtxt")
    return {key: value.string_value for key, value in config.parameters.items()}


def preprocessing_config(repository: Path, mode: str | None = None) -> tuple[PreprocessingConfig, int]:
    """The served preprocessor's settings and its max_pixels, read from the repository it serves."""
    parameters = model_parameters(repository, PREPROCESS_MODEL)
    if mode is not None:
        parameters["mode"] = mode
    return PreprocessingConfig.from_parameters(parameters), int(parameters["max_pixels"])


def _link_or_copy(source: str, destination: str) -> str:
    try:
        Path(destination).hardlink_to(source)
    except OSError:
        shutil.copy2(source, destination)
    return destination
