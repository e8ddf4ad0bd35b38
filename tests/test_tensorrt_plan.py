"""The TensorRT plan step (build/tensorrt/), without a GPU: the check that the engine runs every
LayerNormalization in FP32, and build_plan.sh refusing a plan that fails it.

trtexec needs a GPU, so it is not run here. Its report of the engine (`--profilingVerbosity=detailed
--exportLayerInfo=FILE`) is the JSON of TensorRT's IEngineInspector; tests/fixtures/trtexec_layer_info.json
is written in that format (keys and "Format/Datatype" strings as in NVIDIA/TensorRT
tools/experimental/trt-engine-explorer/examples/pytorch/resnet/A100/fp16/resnet.onnx.engine.graph.json, which
trtexec wrote) for the layers of the tiny test checkpoint's export. build_plan.sh is run with a `trtexec` on
PATH that writes that report and an engine file, as trtexec does, so the script's own logic runs for real.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from beit_repository.names import NETWORK_MODEL

ROOT = Path(__file__).resolve().parents[1]
TENSORRT = ROOT / "build" / "tensorrt"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "trtexec_layer_info.json"


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("layer_precisions", TENSORRT / "layer_precisions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checker() -> ModuleType:
    return load_checker()


@pytest.fixture
def report() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text())
    return document


def layer(report: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [entry for entry in report["Layers"] if entry["Name"] == name]
    return found


def tiny_layer_norms(checker: ModuleType, tiny_repository: Path) -> list[str]:
    names: list[str] = checker.layer_norm_names(tiny_repository / NETWORK_MODEL / "1" / "model.onnx")
    return names


def test_the_fixture_reports_every_layernorm_of_the_tiny_export(
    checker: ModuleType, tiny_repository: Path, report: dict[str, Any]
) -> None:
    names = tiny_layer_norms(checker, tiny_repository)
    assert len(names) == 5
    assert checker.problems(names, report["Layers"]) == []


def test_a_layernorm_the_engine_runs_in_fp16_is_reported(
    checker: ModuleType, tiny_repository: Path, report: dict[str, Any]
) -> None:
    name = "/beit/layers.1/layernorm_after/LayerNormalization"
    layer(report, name)["Outputs"][0]["Format/Datatype"] = "Row major linear FP16 format"
    assert checker.problems(tiny_layer_norms(checker, tiny_repository), report["Layers"]) == [
        f"{name}: layer {name!r} writes FP16, not FP32"
    ]


def test_a_layernorm_no_layer_is_named_after_is_reported_as_ignored_by_trtexec(
    checker: ModuleType, tiny_repository: Path, report: dict[str, Any]
) -> None:
    name = "/beit/pooler/layernorm/LayerNormalization"
    layer(report, name)["Name"] = "/beit/pooler/layernorm/LayerNorm"
    assert checker.problems(tiny_layer_norms(checker, tiny_repository), report["Layers"]) == [
        f"{name}: no engine layer is named after it (trtexec ignored its --layerPrecisions entry)"
    ]


def test_a_layernorm_fused_with_other_nodes_counts_by_its_fused_layers_precision(
    checker: ModuleType, tiny_repository: Path, report: dict[str, Any]
) -> None:
    name = "/beit/layers.0/layernorm_before/LayerNormalization"
    fused = layer(report, name)
    fused["Name"] = f"/beit/layers.0/Add_1 + {name}"
    names = tiny_layer_norms(checker, tiny_repository)
    assert checker.problems(names, report["Layers"]) == []
    fused["Outputs"][0]["Format/Datatype"] = "Channel major FP16 format where channel % 8 == 0"
    assert checker.problems(names, report["Layers"]) == [
        f"{name}: layer '/beit/layers.0/Add_1 + {name}' writes FP16, not FP32"
    ]


def test_a_layernorm_inside_a_myelin_region_is_not_taken_on_trust(
    checker: ModuleType, tiny_repository: Path, report: dict[str, Any]
) -> None:
    name = "/beit/layers.0/layernorm_after/LayerNormalization"
    region = layer(report, name)
    region["Name"] = f"{{ForeignNode[/beit/layers.0/Add_1...{name}]}}"
    region["LayerType"] = "Myelin"
    assert checker.problems(tiny_layer_norms(checker, tiny_repository), report["Layers"]) == [
        f"{name}: inside the Myelin region {region['Name']}, which reports no per-layer precision"
    ]


def test_a_report_without_tensor_formats_is_refused(checker: ModuleType, tmp_path: Path) -> None:
    names_only = tmp_path / "layers.json"
    names_only.write_text(json.dumps({"Layers": ["/beit/pooler/layernorm/LayerNormalization"]}))
    with pytest.raises(checker.LayerInfoError, match="--profilingVerbosity=detailed"):
        checker.load_layers(names_only)


FAKE_TRTEXEC = """#!{python}
# trtexec as far as build_plan.sh sees it: the weights read from --onnx and the data files beside it (as
# TensorRT's parser reads external data), an engine at --saveEngine, the report at --exportLayerInfo.
import shutil, sys, onnx
args = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--") and "=" in arg)
open(sys.argv[0] + ".args", "w").write("\\n".join(sys.argv[1:]))
onnx.load(args["onnx"])
open(args["saveEngine"], "wb").write(b"engine")
shutil.copy({report!r}, args["exportLayerInfo"])
"""


def run_build_plan(
    repository: Path, report: dict[str, Any], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    report_file = tmp_path / "report.json"
    report_file.write_text(json.dumps(report))
    trtexec = bin_dir / "trtexec"
    trtexec.write_text(FAKE_TRTEXEC.format(python=sys.executable, report=str(report_file)))
    trtexec.chmod(trtexec.stat().st_mode | stat.S_IXUSR)
    # python3 must be this environment's (onnx and tritonclient, as the TensorRT image installs them).
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    return subprocess.run(
        ["bash", str(TENSORRT / "build_plan.sh"), str(repository)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": path},
    )


def copied_repository(tiny_repository: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny_repository, tmp_path / "repository"))


def test_build_plan_moves_the_plan_into_place_when_every_layernorm_is_fp32(
    tiny_repository: Path, report: dict[str, Any], tmp_path: Path
) -> None:
    repository = copied_repository(tiny_repository, tmp_path)
    result = run_build_plan(repository, report, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (repository / NETWORK_MODEL / "1" / "model.plan").read_bytes() == b"engine"
    assert "all 5 LayerNormalization layers run in FP32" in result.stdout
    args = (tmp_path / "bin" / "trtexec.args").read_text().splitlines()
    assert "--profilingVerbosity=detailed" in args
    assert any(arg.startswith("--layerPrecisions=") for arg in args)


def test_build_plan_fails_and_leaves_no_plan_when_a_layernorm_is_not_fp32(
    tiny_repository: Path, report: dict[str, Any], tmp_path: Path
) -> None:
    repository = copied_repository(tiny_repository, tmp_path)
    broken = copy.deepcopy(report)
    layer(broken, "/beit/layers.0/layernorm_before/LayerNormalization")["Name"] = "/renamed/by/tensorrt"
    result = run_build_plan(repository, broken, tmp_path)
    assert result.returncode == 1
    assert "1 of 5 LayerNormalization nodes are not shown to run in FP32" in result.stderr
    version = repository / NETWORK_MODEL / "1"
    assert not (version / "model.plan").exists() and not (version / "model.plan.partial").exists()


def test_build_plan_gives_trtexec_the_model_with_its_external_data_beside_it(
    tiny_external_repository: Path, report: dict[str, Any], tmp_path: Path
) -> None:
    repository = copied_repository(tiny_external_repository, tmp_path)
    result = run_build_plan(repository, report, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (repository / NETWORK_MODEL / "1" / "model.plan").read_bytes() == b"engine"


def test_build_plan_names_a_missing_external_data_file_before_running_trtexec(
    tiny_external_repository: Path, report: dict[str, Any], tmp_path: Path
) -> None:
    repository = copied_repository(tiny_external_repository, tmp_path)
    (data,) = (repository / NETWORK_MODEL / "1").glob("model.onnx.*.data")
    data.unlink()
    result = run_build_plan(repository, report, tmp_path)
    assert result.returncode != 0
    assert f"keeps its weights in {data.name} beside it, which is missing" in result.stderr
    assert not (tmp_path / "bin" / "trtexec.args").exists()
