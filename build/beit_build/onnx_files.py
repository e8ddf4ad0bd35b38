"""model.onnx on disk: one file, or the graph plus one external data file beside it, and how a build puts
either in place atomically.

Protobuf caps a message at 2 GiB, so an ONNX model with more tensor data than that keeps it in external data
files, which model.onnx names by paths relative to itself (ONNX's external data format). The TorchScript
exporter switches to it on its own above the limit, writing one file per tensor next to the model; beit-build
then packs them into one data file. `beit-build --external-data` does the same below the limit.

Everything that reads model.onnx opens it by path, so its data file is found beside it, wherever the
repository lies:
- ONNX Runtime resolves external data relative to the model file's directory: the embedded server's
  beit_model/1/model.py, `beit-build check-engine` and the benchmark open model.onnx by path.
- Triton's onnxruntime backend (the GPU and cpu configs): its current source hands ONNX Runtime the model's
  path (`OnnxLoader::LoadSession(is_path, model, ...)`, src/onnxruntime_loader.cc), so the data beside
  model.onnx is found; releases that read model.onnx into memory and created the session from bytes could
  not resolve external data. Not run here: this machine has no Triton container.
- TensorRT's ONNX parser (trtexec --onnx, build/tensorrt/build_plan.sh) reads external weights relative to
  the ONNX file and refuses `../` (onnx-tensorrt ModelImporter.cpp `parseFromFile`,
  WeightsContext.cpp `parseExternalWeights`); ONNX Runtime's TensorRT execution provider hands the parser
  the model's path for the same purpose.

Atomic replacement: a build writes model.onnx and its data file into a staging directory beside the target
and verifies them there. The data file is named after its content (names.onnx_data_file:
model.onnx.<sha256[:16]>.data), so moving it into place never overwrites the file the current model.onnx
refers to; renaming model.onnx over the old one is the single commit point; data files no model.onnx refers
to any more are removed after it. A build killed at any moment leaves the previous model.onnx with its own
data, or the new one with its own. The built configs name the data files too (names.ONNX_DATA_FILES_PARAMETER)
for the readers without the onnx package: beit-serve's preflight and the embedded beit_model.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx.external_data_helper import load_external_data_for_model

from beit_repository.names import ONNX_DATA_GLOB, ONNX_DATA_SUFFIX, onnx_data_file

logger = logging.getLogger(__name__)

_DATA_HASH_LENGTH = 16
"""Hex digits of the data's SHA-256 in its file name (64 bits: two builds never collide in one directory)."""
_STAGING_SUFFIX = ".tmp"


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of `graph` that can hold external data: initializers, and tensor attributes of nodes
    (Constant values), in subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def _locations(model: onnx.ModelProto) -> list[str]:
    """The external data locations `model` refers to, each once, in order of first use."""
    locations: dict[str, None] = {}
    for tensor in _tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations[entry.value] = None
    return list(locations)


def external_data_files(onnx_path: Path) -> list[Path]:
    """The files beside `onnx_path` that hold its tensors' data (none for a single-file model). A location
    that is not a plain file name beside model.onnx is refused: TensorRT's parser refuses `../`, and Triton
    copies only the model directory from cloud storage."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    files = []
    for location in _locations(model):
        if Path(location).name != location or location in {".", ".."}:
            raise ValueError(
                f"{onnx_path} refers to external data at {location!r}: it must be a file beside model.onnx"
            )
        files.append(onnx_path.parent / location)
    return files


def model_files(onnx_path: Path) -> list[Path]:
    """model.onnx and the data files it refers to: what must be copied, hashed or moved together."""
    return [onnx_path, *external_data_files(onnx_path)]


def save_model(model: onnx.ModelProto, path: Path, *, external_data: bool) -> list[Path]:
    """Write `model` to `path`, alone in a directory of its own (a staging directory), as one file, or as
    `path` plus one data file named after its content when `external_data` is set or when `model` already
    refers to external data in that directory (the exporter's output above 2 GiB: one file per tensor, which
    are packed and then deleted). Returns the data files written."""
    scattered = [path.parent / location for location in _locations(model)]
    if not external_data and not scattered:
        onnx.save(model, str(path))
        return []
    if scattered:
        load_external_data_for_model(model, str(path.parent))
    partial = f"{path.name}.partial{ONNX_DATA_SUFFIX}"
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=partial
    )
    data = path.with_name(onnx_data_file(_sha256(path.with_name(partial))[:_DATA_HASH_LENGTH]))
    os.replace(path.with_name(partial), data)
    # onnx creates the data file readable by its owner only; Triton may run as another user (a container).
    shutil.copymode(path, data)
    graph_only = onnx.load(str(path), load_external_data=False)
    for tensor in _tensors(graph_only.graph):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data.name
    onnx.save(graph_only, str(path))
    for file in scattered:
        if file != data:
            file.unlink(missing_ok=True)
    logger.info("tensor data in %s (%.1f MB) beside %s", data.name, data.stat().st_size / 1e6, path.name)
    return [data]


@contextlib.contextmanager
def staged_model(path: Path) -> Iterator[Path]:
    """A path named like `path` in a fresh staging directory beside it, for the export to write model.onnx
    and its data files into; if the block succeeds they are moved into place (the data first, then
    model.onnx as the commit point), otherwise left out. The staging directory is removed either way."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f"{path.name}.", suffix=_STAGING_SUFFIX))
    try:
        yield staging / path.name
        commit(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def commit(staged: Path, path: Path) -> None:
    """Move the verified model at `staged` and its data files onto `path`; then remove the data files of
    the model it replaced."""
    data = external_data_files(staged)
    for file in data:
        os.replace(file, path.parent / file.name)
    os.replace(staged, path)
    keep = {file.name for file in data}
    for stale in sorted(path.parent.glob(ONNX_DATA_GLOB)):
        if stale.name not in keep:
            logger.info("removing %s: the replaced model's data", stale)
            stale.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
