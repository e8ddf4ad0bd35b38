"""The int8 engine (issue 14): beit-build --quantize int8, the embedded_int8 variant served by the real
embedded Triton, beit-serve's preflight for it, and check-engine --int8's figures against a direct
computation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import tritonclient.http as httpclient

from beit_build import build_repository
from beit_build.build import is_built
from beit_build.check_engine import FP32_ONNX, check_engine
from beit_build.cli import main
from beit_build.errors import EngineCheckError
from beit_build.quantize import classifier_head_nodes
from beit_build.repository import INT8_ONNX_PATH, ONNX_PATH, read_parameters
from beit_client import BeitClient
from beit_preprocessing import PreprocessingConfig, preprocess_bytes
from beit_repository import model_config
from beit_repository.names import (
    EMBEDDED_VARIANT,
    INT8_VARIANT,
    NETWORK_MODEL,
    PIXEL_VALUES,
    PREPROCESS_MODEL,
    PROBABILITIES,
    VARIANTS_DIRECTORY,
)
from beit_serve import EmbeddedServer
from tests.conftest import ROOT, free_port
from tests.images import encode, photo
from tests.triton_load_rules import load_errors

PHOTO_COUNT = 12


@pytest.fixture(scope="module")
def int8_repository(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("int8-repository")
    result = build_repository(tiny_checkpoint, repository, quantize="int8")
    assert result.int8_onnx_path == repository / INT8_ONNX_PATH
    return repository


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of JPEG photos, one in a subfolder: check-engine walks folders."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    for index in range(PHOTO_COUNT):
        where = folder / "more" if index == 0 else folder
        (where / f"photo-{index:02d}.jpg").write_bytes(
            encode(photo(320 + 16 * index, 240, seed=index), "JPEG")
        )
    return folder


def session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def probabilities(path: Path, pixels: np.ndarray) -> np.ndarray:
    (result,) = session(path).run([PROBABILITIES], {PIXEL_VALUES: pixels})
    return np.asarray(result)


def photo_pixels(repository: Path, folder: Path) -> np.ndarray:
    config = PreprocessingConfig.from_parameters(read_parameters(repository))
    files = sorted(folder.rglob("*.jpg"))
    return np.stack([preprocess_bytes(path.read_bytes(), config, max_pixels=10**8) for path in files])


# 1. The build


def test_the_int8_model_quantizes_weight_matmuls_and_keeps_norms_softmax_and_head_fp32(
    int8_repository: Path,
) -> None:
    fp32 = onnx.load(str(int8_repository / ONNX_PATH)).graph
    int8 = onnx.load(str(int8_repository / INT8_ONNX_PATH)).graph
    ops = [node.op_type for node in int8.node]
    assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops
    for kept in ("LayerNormalization", "Softmax"):
        assert ops.count(kept) == [node.op_type for node in fp32.node].count(kept) > 0, kept
    # The head (a Gemm, which quantization rewrites as MatMul + Add) computes in fp32 from the fp32 embedding.
    head = [node.op_type for node in int8.node if node.name in classifier_head_nodes(int8)]
    assert sorted(head) == ["Add", "MatMul"]
    # Inputs and outputs are unchanged, so the config and every client stay as they are.
    assert [v.SerializeToString() for v in [*int8.input, *int8.output]] == [
        v.SerializeToString() for v in [*fp32.input, *fp32.output]
    ]
    config = model_config.read(int8_repository / NETWORK_MODEL / VARIANTS_DIRECTORY / f"{INT8_VARIANT}.pbtxt")
    assert load_errors(config, int8_repository / NETWORK_MODEL, int8_repository / INT8_ONNX_PATH) == []


def test_the_int8_variant_is_the_embedded_one_but_for_the_model_file(int8_repository: Path) -> None:
    for model in (NETWORK_MODEL, PREPROCESS_MODEL):
        configs = model_config.variants(int8_repository / model)
        embedded, int8 = (
            model_config.read(configs[EMBEDDED_VARIANT]),
            model_config.read(configs[INT8_VARIANT]),
        )
        int8.parameters.pop("onnx_file", None)
        assert int8 == embedded, model


def test_a_rebuild_without_quantize_removes_the_stale_int8_model(
    int8_repository: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    repository = shutil.copytree(int8_repository, tmp_path / "copy")
    assert is_built(repository, str(tiny_checkpoint), quantize="int8")
    build_repository(tiny_checkpoint, repository)
    assert not (repository / INT8_ONNX_PATH).exists()
    assert is_built(repository, str(tiny_checkpoint))
    assert not is_built(repository, str(tiny_checkpoint), quantize="int8")


# 2. check-engine --int8


def test_check_engine_int8_reports_what_a_direct_computation_gives(
    int8_repository: Path, photos: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pixels = photo_pixels(int8_repository, photos)
    expected = probabilities(int8_repository / ONNX_PATH, pixels)
    actual = probabilities(int8_repository / INT8_ONNX_PATH, pixels)
    top1 = np.mean(actual.argmax(-1) == expected.argmax(-1))
    top5 = np.mean(
        [
            len(set(np.argsort(-a)[:5]) & set(np.argsort(-e)[:5])) / 5
            for a, e in zip(actual, expected, strict=True)
        ]
    )
    max_diff = np.abs(actual - expected).max()
    assert max_diff > 0, "the int8 model computes exactly what fp32 does: nothing was quantized"

    result = check_engine(int8_repository, int8=True, images=[photos])
    assert result.reference == FP32_ONNX and result.images == PHOTO_COUNT
    assert result.top1_agreement == pytest.approx(top1)
    assert result.top5_agreement == pytest.approx(top5)
    assert result.max_abs_probability_diff == pytest.approx(max_diff, rel=1e-5)
    # The tests' tiny checkpoint has a spread head (tests/checkpoints.py): int8 keeps its answers.
    assert result.top1_agreement == 1.0

    main(["check-engine", "--repository", str(int8_repository), "--int8", str(photos)])
    out = capsys.readouterr().out
    assert (
        f"model.int8.onnx on onnx (CPUExecutionProvider) against fp32 model.onnx, {PHOTO_COUNT} images" in out
    )
    assert f"top-1 agreement {top1:.1%}, top-5 agreement {top5:.1%}" in out
    assert f"max |delta probability| {max_diff:.3g}" in out


def test_check_engine_int8_needs_the_int8_model_and_no_checkpoint(
    int8_repository: Path, tiny_repository: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(EngineCheckError, match="--quantize int8"):
        check_engine(tiny_repository, int8=True)
    with pytest.raises(EngineCheckError, match="compared with model.onnx"):
        check_engine(int8_repository, int8=True, model=tiny_checkpoint)
    with pytest.raises(EngineCheckError, match="no image files"):
        check_engine(int8_repository, int8=True, images=[tmp_path])


# 3. Serving the int8 variant


@pytest.fixture(scope="module")
def int8_server(int8_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(
        int8_repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        model_config_name=INT8_VARIANT,
        log_file=tmp_path_factory.mktemp("int8-log") / "triton.log",
    )
    with server:
        yield server


@pytest.mark.server
def test_the_served_int8_variant_answers_with_the_int8_models_probabilities(
    int8_server: EmbeddedServer, int8_repository: Path, photos: Path
) -> None:
    pixels = photo_pixels(int8_repository, photos)[:4]
    client = httpclient.InferenceServerClient(int8_server.http_url.split("://", 1)[1])
    try:
        inputs = httpclient.InferInput(PIXEL_VALUES, list(pixels.shape), "UINT8")
        inputs.set_data_from_numpy(pixels)
        served = client.infer(NETWORK_MODEL, [inputs]).as_numpy(PROBABILITIES)
    finally:
        client.close()
    int8 = probabilities(int8_repository / INT8_ONNX_PATH, pixels)
    fp32 = probabilities(int8_repository / ONNX_PATH, pixels)
    np.testing.assert_allclose(served, int8, atol=1e-6)
    assert np.abs(served - fp32).max() > 1e-5, "the server ran the fp32 model.onnx"

    # Alone in its batch: dynamic quantization scales activations by the range of the whole batch, so an
    # image's int8 probabilities move slightly with the images it is batched with.
    first = sorted(photos.rglob("*.jpg"))[0]
    alone = probabilities(int8_repository / INT8_ONNX_PATH, pixels[:1])[0]
    with BeitClient(int8_server.grpc_url) as beit:
        (predictions,) = beit.classify([first], top_k=3)
    assert [p.index for p in predictions] == list(np.argsort(-alone)[:3])
    assert [p.score for p in predictions] == pytest.approx(np.sort(alone)[::-1][:3], abs=1e-6)


@pytest.mark.server
def test_beit_serve_refuses_the_int8_variant_of_a_repository_built_without_it_in_one_line(
    tiny_repository: Path, tmp_path: Path
) -> None:
    ports = [f"--{name}-port={free_port()}" for name in ("http", "grpc", "metrics")]
    command = [sys.executable, "-m", "beit_serve", "--repository", str(tiny_repository), *ports]
    result = subprocess.run(
        [*command, "--model-config-name", INT8_VARIANT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("beit-serve: error: ") and "has no beit_model/1/model.int8.onnx" in line, line
    assert "--quantize int8" in line


@pytest.mark.parametrize(
    ("variables", "build_flag", "variant"),
    [([], None, EMBEDDED_VARIANT), (["QUANTIZE=int8"], "--quantize int8", INT8_VARIANT)],
)
def test_make_serve_builds_and_serves_the_int8_variant_when_asked(
    variables: list[str], build_flag: str | None, variant: str
) -> None:
    commands = subprocess.run(
        ["make", "-n", "serve", "RANDOM=tiny", *variables],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.replace("\\\n", " ")
    build = next(line for line in commands.splitlines() if "beit-build" in line)
    assert (build_flag in build) if build_flag else ("--quantize" not in build)
    assert f"--model-config-name {variant} " in commands
