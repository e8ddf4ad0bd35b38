"""Variants of a built model repository, made as edited copies of its parsed configs
(`beit_repository.model_config.edited_copy`): the generated checkpoint parameters and every other field
survive exactly."""

from __future__ import annotations

from pathlib import Path

from beit_preprocessing import DEFAULT_MAX_PIXELS, PreprocessingConfig
from beit_repository import model_config
from beit_repository.names import CONFIG_FILE, MODEL_VERSION, NETWORK_MODEL, ONNX_FILE, PREPROCESS_MODEL


def onnx_model(repository: Path) -> Path:
    return repository / NETWORK_MODEL / MODEL_VERSION / ONNX_FILE


def without_dynamic_batching(repository: Path, destination: Path) -> Path:
    """Every model executes each request as it comes: batch size = images per request."""

    def edit(_path: Path, config: model_config.ModelConfig) -> bool:
        if not config.HasField("dynamic_batching"):
            return False
        config.ClearField("dynamic_batching")
        return True

    return model_config.edited_copy(repository, destination, edit)


def with_preprocessor(repository: Path, destination: Path, *, mode: str, instances: int) -> Path:
    """The preprocessor in `mode`, laid out as `instances` processes of one decode thread each: the layout
    that costs the least CPU per image (threads within a process contend for Python's GIL)."""

    def edit(path: Path, config: model_config.ModelConfig) -> bool:
        if config.name != PREPROCESS_MODEL:
            return False
        model_config.set_parameters(config, {"mode": mode, "decode_threads": "1"})
        for group in config.instance_group:
            group.count = instances
        return True

    return model_config.edited_copy(repository, destination, edit)


def model_parameters(repository: Path, model: str) -> dict[str, str]:
    return model_config.parameters(model_config.read(repository / model / CONFIG_FILE))


def preprocessing_config(repository: Path, mode: str | None = None) -> tuple[PreprocessingConfig, int]:
    """The served preprocessor's settings and its max_pixels, read from the repository it serves."""
    parameters = model_parameters(repository, PREPROCESS_MODEL)
    if mode is not None:
        parameters["mode"] = mode
    max_pixels = int(parameters.get("max_pixels") or DEFAULT_MAX_PIXELS)
    return PreprocessingConfig.from_parameters(parameters), max_pixels
