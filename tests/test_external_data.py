"""A model whose weights live in an external data file beside model.onnx (every export above protobuf's 2 GiB,
forced here on the tiny checkpoint with `external_data=True`): built, verified, recognized as built, served
by the real embedded Triton with the same answers as the single-file build, checked by check-engine and
handed to trtexec with its data beside it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from beit_build import build_repository
from beit_build.build import is_built
from beit_build.check_engine import check_engine
from beit_build.onnx_files import external_data_files, model_files, save_model
from beit_build.repository import ONNX_PATH, read_parameters
from beit_client import BeitClient
from beit_repository.names import ONNX_DATA_FILES_PARAMETER, onnx_data_file
from beit_serve import EmbeddedServer
from beit_serve.preflight import PreflightError, check_repository
from tests.checkpoints import save_tiny_checkpoint
from tests.conftest import free_port
from tests.images import varied_images


def data_file(repository: Path) -> Path:
    (path,) = external_data_files(repository / ONNX_PATH)
    return path


def test_the_weights_go_to_one_data_file_named_by_its_content_and_the_configs_name_it(
    tiny_external_repository: Path, tiny_checkpoint: Path
) -> None:
    onnx_path = tiny_external_repository / ONNX_PATH
    data = data_file(tiny_external_repository)
    assert data.parent == onnx_path.parent
    assert data.name.startswith("model.onnx.") and data.name.endswith(".data")
    assert data.name == onnx_data_file(data.name.removeprefix("model.onnx.").removesuffix(".data"))
    # The graph alone is small; the weights are all in the data file, readable by whoever runs Triton.
    assert onnx_path.stat().st_size < data.stat().st_size / 5
    assert data.stat().st_mode & 0o444 == onnx_path.stat().st_mode & 0o444
    assert json.loads(read_parameters(tiny_external_repository)[ONNX_DATA_FILES_PARAMETER]) == [data.name]
    assert is_built(tiny_external_repository, str(tiny_checkpoint))


def test_a_repository_missing_its_data_file_is_not_built_and_not_served(
    tiny_external_repository: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    repository = Path(shutil.copytree(tiny_external_repository, tmp_path / "copy"))
    data = data_file(repository)
    data.unlink()
    assert not is_built(repository, str(tiny_checkpoint))
    with pytest.raises(PreflightError, match=f"has no beit_model/1/{data.name}: build it first"):
        check_repository(repository, "embedded")


def test_same_weights_give_the_same_data_file_and_a_rebuild_removes_the_replaced_data(
    tiny_external_repository: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    repository = Path(shutil.copytree(tiny_external_repository, tmp_path / "copy"))
    version = (repository / ONNX_PATH).parent
    first = data_file(repository)
    build_repository(tiny_checkpoint, repository, external_data=True)
    assert data_file(repository) == first
    other = save_tiny_checkpoint(tmp_path / "other", seed=1)
    build_repository(other, repository, external_data=True)
    assert data_file(repository) != first and not first.exists()
    build_repository(other, repository)
    assert model_files(repository / ONNX_PATH) == [repository / ONNX_PATH]
    assert not list(version.glob("*.data")) and not list(version.glob("*.tmp"))
    assert json.loads(read_parameters(repository)[ONNX_DATA_FILES_PARAMETER]) == []


def test_both_builds_hold_the_same_graph_and_weights(
    tiny_external_repository: Path, tiny_repository: Path
) -> None:
    external = onnx.load(str(tiny_external_repository / ONNX_PATH))
    single = onnx.load(str(tiny_repository / ONNX_PATH))
    assert external.graph.node == single.graph.node
    weights = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in single.graph.initializer}
    assert weights.keys() == {tensor.name for tensor in external.graph.initializer}
    for tensor in external.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(tensor), weights[tensor.name])


def test_check_engine_runs_the_external_data_model(tiny_external_repository: Path) -> None:
    checked = check_engine(tiny_external_repository)
    assert checked.top1_agreement == 1.0 and checked.max_abs_probability_diff < 1e-5


@pytest.fixture(scope="module")
def external_server(tiny_external_repository: Path) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(
        tiny_external_repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with server:
        yield server


@pytest.mark.server
def test_the_served_answers_equal_the_single_file_builds(
    external_server: EmbeddedServer, triton_server: EmbeddedServer
) -> None:
    images = list(varied_images().values())
    with BeitClient(external_server.http_url) as external, BeitClient(triton_server.http_url) as single:
        assert external.classify(images, top_k=10) == single.classify(images, top_k=10)
        np.testing.assert_array_equal(external.embed(images), single.embed(images))


def test_an_export_scattered_over_one_file_per_tensor_is_packed_into_one_data_file(
    tiny_repository: Path, tmp_path: Path
) -> None:
    # What the TorchScript exporter writes above 2 GiB: every tensor in a file of its own beside the model.
    model = onnx.load(str(tiny_repository / ONNX_PATH))
    weights = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    scattered = tmp_path / "staging" / "model.onnx"
    scattered.parent.mkdir()
    onnx.save_model(model, str(scattered), save_as_external_data=True, all_tensors_to_one_file=False)
    assert len(list(scattered.parent.iterdir())) > 10
    (data,) = save_model(onnx.load(str(scattered), load_external_data=False), scattered, external_data=False)
    assert sorted(scattered.parent.iterdir()) == sorted([scattered, data])
    packed = onnx.load(str(scattered)).graph.initializer
    assert {tensor.name for tensor in packed} == weights.keys()
    for tensor in packed:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(tensor), weights[tensor.name])
