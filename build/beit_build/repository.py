"""Writing into a Triton model repository: the committed template, artifacts, and generated parameters."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.text_encoding import CEscape
from tritonclient.grpc import model_config_pb2

logger = logging.getLogger(__name__)

# build/beit_build/repository.py -> the project's model_repository/ (configs committed, artifacts ignored).
TEMPLATE_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
ONNX_PATH = Path("beit_model", "1", "model.onnx")
LABELS_PATH = Path("beit_model", "labels.txt")
MODEL_CONFIG_PATH = Path("beit_model", "config.pbtxt")
PARAMETERS_MARKER = "# ---- beit-build: checkpoint parameters (generated, do not edit below) ----"
# Built or downloaded files, never part of the template; *.tmp are atomic writes in flight.
_NOT_TEMPLATE = ("model.onnx", "model.onnx.data", "model.plan", "labels.txt", "*.tmp", "__pycache__", "*.pyc")


def copy_template(repository: Path, template: Path = TEMPLATE_REPOSITORY) -> None:
    """Copy the template's configs and model.py files into `repository`, unless it is the template."""
    if repository.resolve() == template.resolve():
        return
    logger.info("copying the template repository %s to %s", template, repository)
    shutil.copytree(template, repository, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*_NOT_TEMPLATE))


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it only if the block succeeds: a killed or failed write
    never leaves a partial file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_labels(repository: Path, labels: list[str]) -> Path:
    path = repository / LABELS_PATH
    write_text_atomically(path, "".join(f"{label}\n" for label in labels))
    return path


def config_files(repository: Path) -> list[Path]:
    return sorted(repository.rglob("*.pbtxt"))


def write_parameters(repository: Path, parameters: Mapping[str, str]) -> list[Path]:
    """Replace the generated block of every config file in `repository`; returns the files written."""
    paths = config_files(repository)
    if not paths:
        raise FileNotFoundError(f"no .pbtxt model configs under {repository}")
    for path in paths:
        text = with_parameters(path.read_text(encoding="utf-8"), parameters)
        _check_model_config(text, path)
        write_text_atomically(path, text)
    return paths


def read_parameters(config_path: Path) -> dict[str, str]:
    config = text_format.Parse(config_path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig())
    return {key: value.string_value for key, value in config.parameters.items()}


def with_parameters(config_text: str, parameters: Mapping[str, str]) -> str:
    """`config_text` with everything from the marker line on replaced by `parameters` (JSON text values)."""
    hand_written = config_text.split(PARAMETERS_MARKER, 1)[0].rstrip("\n")
    lines = [
        f'parameters {{ key: "{_escape(key)}" value {{ string_value: "{_escape(value)}" }} }}'
        for key, value in parameters.items()
    ]
    return "\n".join([hand_written, "", PARAMETERS_MARKER, *lines]) + "\n"


def _escape(text: str) -> str:
    return CEscape(text, as_utf8=True)


def _check_model_config(text: str, path: Path) -> None:
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise ValueError(f"{path} would not parse as a Triton ModelConfig: {e}") from e
