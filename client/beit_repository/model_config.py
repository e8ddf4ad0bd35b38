"""Reading, writing and validating Triton model configs: `config.pbtxt` and `configs/NAME.pbtxt` variants.

Configs are parsed with Triton's own schema (`model_config_pb2`, shipped in tritonclient) and edited as
protobuf messages, never as text, so an edit keeps every other field exactly.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc.model_config_pb2 import ModelConfig

from beit_repository.names import CONFIG_FILE, DEFAULT_VARIANT, ONNX_DATA_FILES_PARAMETER, VARIANTS_DIRECTORY

__all__ = [
    "ModelConfig",
    "ModelConfigError",
    "batch_profile",
    "config_files",
    "edited_copy",
    "json_parameters",
    "model_directory",
    "onnx_data_files",
    "parameters",
    "parse",
    "read",
    "set_parameters",
    "to_text",
    "variant_name",
    "variants",
    "write",
]


class ModelConfigError(ValueError):
    """A config that does not parse against Triton's schema, or breaks a rule of this repository."""


def parse(text: str, source: str = "<text>") -> ModelConfig:
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as e:
        raise ModelConfigError(f"{source} is not a valid Triton model config: {e}") from e


def read(path: Path) -> ModelConfig:
    """Parse `path` and check that it names the model directory it sits in, as Triton requires."""
    config = parse(path.read_text(encoding="utf-8"), str(path))
    expected = model_directory(path).name
    if config.name != expected:
        raise ModelConfigError(f"{path} names the model {config.name!r}, but sits in {expected!r}")
    return config


def to_text(config: ModelConfig, header: str = "") -> str:
    """Protobuf text format, which Triton reads, after an optional comment header (one '#' per line)."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body: str = text_format.MessageToString(config, as_utf8=True)
    return comment + body


def write(path: Path, config: ModelConfig, header: str = "") -> None:
    path.write_text(to_text(config, header), encoding="utf-8")


def model_directory(path: Path) -> Path:
    """The model directory of a config file: its parent for config.pbtxt, its grandparent for a variant."""
    return path.parent.parent if path.parent.name == VARIANTS_DIRECTORY else path.parent


def variant_name(path: Path) -> str:
    """What --model-config-name selects this file with; DEFAULT_VARIANT for config.pbtxt."""
    return DEFAULT_VARIANT if path.name == CONFIG_FILE else path.stem


def variants(model_dir: Path) -> dict[str, Path]:
    """Every config a server could load for the model in `model_dir`, by variant name."""
    paths = [model_dir / CONFIG_FILE, *sorted((model_dir / VARIANTS_DIRECTORY).glob("*.pbtxt"))]
    return {variant_name(path): path for path in paths if path.is_file()}


def config_files(repository: Path) -> list[Path]:
    """Every config of every model in `repository`."""
    return [path for model_dir in _model_dirs(repository) for path in variants(model_dir).values()]


def _model_dirs(repository: Path) -> Iterator[Path]:
    return (path.parent for path in sorted(repository.glob(f"*/{CONFIG_FILE}")))


def parameters(config: ModelConfig) -> dict[str, str]:
    """The config's `parameters` as plain strings."""
    return {key: value.string_value for key, value in config.parameters.items()}


def onnx_data_files(parameters: Mapping[str, str]) -> list[str]:
    """The external data files beside model.onnx that beit-build recorded in the config's `parameters`:
    none for a single-file model, or for a repository built before they were recorded."""
    return list(json.loads(parameters.get(ONNX_DATA_FILES_PARAMETER, "[]")))


def json_parameters(config: ModelConfig, keys: Sequence[str]) -> dict[str, Any]:
    """Parameters beit-build writes, whose values are JSON text, decoded (the hand-written ones are plain)."""
    found = parameters(config)
    missing = [key for key in keys if key not in found]
    if missing:
        raise ModelConfigError(f"{config.name!r} lacks the parameters {missing}: build it with beit-build")
    try:
        return {key: json.loads(found[key]) for key in keys}
    except json.JSONDecodeError as e:
        raise ModelConfigError(f"a parameter of {config.name!r} is not JSON text: {e}") from e


def set_parameters(config: ModelConfig, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


def batch_profile(config: ModelConfig) -> tuple[int, int, int]:
    """(min, opt, max) batch for a TensorRT optimization profile: the whole range the dynamic batcher can
    form, 1 to max_batch_size, tuned at the middle preferred batch size (TensorRT times its tactics at opt;
    the batcher forms small batches under light load and full ones under heavy load)."""
    if config.max_batch_size < 1:
        raise ModelConfigError(
            f"{config.name}: max_batch_size must be >= 1 for a TensorRT profile over a dynamic batch axis"
        )
    preferred = sorted(
        size for size in config.dynamic_batching.preferred_batch_size if size <= config.max_batch_size
    )
    opt = preferred[(len(preferred) - 1) // 2] if preferred else config.max_batch_size
    return 1, opt, config.max_batch_size


def edited_copy(repository: Path, destination: Path, edit: Callable[[Path, ModelConfig], bool]) -> Path:
    """A copy of `repository` (model files hard-linked where possible: model.onnx is large) in which `edit`
    may change each parsed config in place, returning whether it did; edited configs are rewritten."""
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(repository, destination, copy_function=_link_or_copy)
    for path in config_files(destination):
        config = read(path)
        if edit(path, config):
            path.unlink()  # a hard link would write through to the original
            write(path, config)
    return destination


def _link_or_copy(source: str, destination: str) -> str:
    try:
        Path(destination).hardlink_to(source)
    except OSError:
        shutil.copy2(source, destination)
    return destination
