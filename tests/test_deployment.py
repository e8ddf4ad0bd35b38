"""The GPU deployment (docker-compose.yml, build/Dockerfile.*, build/tensorrt, deploy/), checked without a
Docker engine or a GPU: what Compose itself accepts, what each service is wired to, and that the images
install what the code running in them imports.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx
import pytest
import yaml
from onnx import TensorProto, helper

from beit_repository import model_config
from beit_repository.names import DEFAULT_REPOSITORY, NETWORK_MODEL, TENSORRT_VARIANT, VARIANTS_DIRECTORY
from tests import compose
from tests.compose import Mount

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
TEMPLATE = ROOT / "model_repository"
"""The committed model repository template (configs and Python-backend models, no artifacts)."""
BUILT_REPOSITORY = ROOT / DEFAULT_REPOSITORY
"""Where the compose steps write and Triton reads the built repository, as a host path."""
TRITON_DOCKERFILE = ROOT / "build" / "Dockerfile.triton"
# What the Python-backend models import of beit_repository, copied file by file into the Triton image.
IMAGE_REPOSITORY_FILES = ("__init__.py", "names.py")


def compose_config(**env: str) -> dict[str, Any]:
    """The file as Compose loads it (anchors, interpolation, schema, consistency) with only env set."""
    return compose.load(COMPOSE_FILE, env)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return compose_config()["services"]


def volumes(service: dict[str, Any]) -> dict[str, Mount]:
    """target -> Mount, host paths absolute as Compose resolves them against the project directory."""
    return compose.mounts(service, ROOT)


def published_ports(service: dict[str, Any]) -> set[int]:
    return compose.published_ports(service)


def gpu_reserved(service: dict[str, Any]) -> bool:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    return any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def triton_flag(service: dict[str, Any], flag: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in service["command"] if arg.startswith(f"--{flag}=")]
    return value


def load_plan_args() -> ModuleType:
    spec = importlib.util.spec_from_file_location("plan_args", ROOT / "build" / "tensorrt" / "plan_args.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compose_file_is_valid_for_compose(services: dict[str, Any]) -> None:
    # compose_config raised already if the schema or Compose's consistency checks refused the file.
    assert set(services) == {
        "triton",
        "build",
        "tensorrt",
        "prometheus",
        "grafana",
        "locust-master",
        "locust-worker",
        "gateway",
    }


def test_plain_up_starts_triton_prometheus_and_grafana_and_the_rest_needs_a_profile(
    services: dict[str, Any],
) -> None:
    always = {name for name, service in services.items() if not service.get("profiles")}
    assert always == {"triton", "gateway", "prometheus", "grafana"}
    assert services["build"]["profiles"] == ["build"]
    assert services["tensorrt"]["profiles"] == ["tensorrt"]
    assert services["locust-master"]["profiles"] == services["locust-worker"]["profiles"] == ["loadtest"]


def test_triton_reserves_gpus_publishes_its_ports_and_checks_readiness(services: dict[str, Any]) -> None:
    triton = services["triton"]
    assert gpu_reserved(triton)
    assert published_ports(triton) == {8000, 8001, 8002}
    assert (triton_flag(triton, "http-port"), triton_flag(triton, "grpc-port")) == ("8000", "8001")
    assert triton_flag(triton, "metrics-port") == "8002"
    health = " ".join(triton["healthcheck"]["test"])
    assert "http://localhost:8000/v2/health/ready" in health


def test_the_schema_rejects_what_compose_rejects() -> None:
    model = yaml.safe_load(COMPOSE_FILE.read_text())
    assert compose.schema_errors(model) == []
    unknown_key = copy.deepcopy(model)
    unknown_key["services"]["triton"]["gpu"] = "all"
    assert compose.schema_errors(unknown_key) == [
        "services.triton: 'gpu' does not match any of the regexes: '^x-'"
    ]
    wrong_type = copy.deepcopy(model)
    wrong_type["services"]["triton"]["ports"] = "8000:8000"
    assert compose.schema_errors(wrong_type) == ["services.triton.ports: '8000:8000' is not of type 'array'"]
    misspelt_service = copy.deepcopy(model)
    misspelt_service["service"] = misspelt_service.pop("services")
    assert compose.schema_errors(misspelt_service)


def test_loading_reports_a_file_compose_refuses(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    shm_size:", "    shm_sizes:", 1))
    with pytest.raises(compose.ComposeError, match=r"\nservices\.triton: 'shm_sizes' does not match"):
        compose.load(broken, {})
    broken.write_text(
        COMPOSE_FILE.read_text().replace("      - trt_cache:/trt_cache", "      - trt:/trt_cache")
    )
    with pytest.raises(compose.ComposeError, match="service 'triton' refers to undefined volume trt$"):
        compose.load(broken, {})


def test_loading_reports_a_required_variable_that_is_unset(tmp_path: Path) -> None:
    required = tmp_path / "docker-compose.yml"
    required.write_text(
        COMPOSE_FILE.read_text().replace(
            "${MODEL:-microsoft/", "${MODEL:?set MODEL to a checkpoint, e.g. microsoft/"
        )
    )
    message = r"services\.build\.command\[1\]: required variable MODEL is missing a value: set MODEL to"
    with pytest.raises(compose.InterpolationError, match=message):
        compose.load(required, {})
    with pytest.raises(compose.InterpolationError, match=message):
        compose.load(required, {"MODEL": ""})
    chosen = compose.load(required, {"MODEL": "microsoft/beit-large-patch16-224"})
    assert chosen["services"]["build"]["command"][1] == "microsoft/beit-large-patch16-224"


def test_triton_serves_the_repository_read_only_and_caches_engines_on_a_volume(
    services: dict[str, Any],
) -> None:
    from tests.test_model_configs import tensorrt_accelerator

    triton = services["triton"]
    mounts = volumes(triton)
    repository = triton_flag(triton, "model-repository")
    assert mounts[repository] == Mount("bind", str(BUILT_REPOSITORY), read_only=True)
    cache_path = tensorrt_accelerator(model_config.read(TEMPLATE / "beit_model" / "config.pbtxt"))[
        "trt_engine_cache_path"
    ]
    cache = mounts[cache_path]
    assert cache.type == "volume" and not cache.read_only
    assert cache.source in compose_config()["volumes"], "the engine cache must outlive the container"


def test_model_config_name_defaults_to_config_pbtxt_and_selects_tensorrt_on_request(
    services: dict[str, Any],
) -> None:
    # "config" has no configs/config.pbtxt anywhere (test_model_configs keeps it so): config.pbtxt loads.
    assert triton_flag(services["triton"], "model-config-name") == "config"
    chosen = compose_config(TRITON_MODEL_CONFIG="tensorrt")["services"]["triton"]
    assert triton_flag(chosen, "model-config-name") == "tensorrt"
    assert (TEMPLATE / "beit_model" / "configs" / "tensorrt.pbtxt").is_file()


def test_build_step_writes_the_repository_from_the_chosen_checkpoint(services: dict[str, Any]) -> None:
    build = services["build"]
    assert not gpu_reserved(build)
    command = build["command"]
    assert command[command.index("--model") + 1] == "microsoft/beit-base-patch16-224-pt22k-ft22k"
    target = command[command.index("--repository") + 1]
    assert volumes(build)[target] == Mount("bind", str(BUILT_REPOSITORY), read_only=False)
    hf_cache = volumes(build)["/root/.cache/huggingface"]
    assert hf_cache.type == "volume" and hf_cache.source in compose_config()["volumes"]
    assert build["environment"]["HF_TOKEN"] == ""
    other = compose_config(MODEL="microsoft/beit-large-patch16-224")["services"]["build"]["command"]
    assert other[other.index("--model") + 1] == "microsoft/beit-large-patch16-224"


def test_tensorrt_step_has_a_gpu_and_writes_into_the_repository(services: dict[str, Any]) -> None:
    tensorrt = services["tensorrt"]
    assert gpu_reserved(tensorrt)
    (target,) = tensorrt["command"]
    assert volumes(tensorrt)[target] == Mount("bind", str(BUILT_REPOSITORY), read_only=False)


def test_locust_targets_triton_and_waits_for_it(services: dict[str, Any]) -> None:
    master, worker = services["locust-master"], services["locust-worker"]
    assert master["command"][master["command"].index("--host") + 1] == "http://triton:8000"
    assert master["depends_on"]["triton"]["condition"] == "service_healthy"
    assert "--worker" in worker["command"]
    assert worker["command"][worker["command"].index("--master-host") + 1] == "locust-master"
    for service in (master, worker):
        assert service["command"][service["command"].index("-f") + 1] == "loadtest/locustfile.py"
        assert service["build"]["dockerfile"] == "build/Dockerfile.locust"


def test_prometheus_scrapes_triton_metrics_port(services: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for static in job["static_configs"] for t in static["targets"]
    ]
    assert targets == [f"triton:{triton_flag(services['triton'], 'metrics-port')}"]


def test_grafana_dashboard_uses_the_provisioned_datasource_and_tritons_metric_names() -> None:
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "beit-triton.json").read_text())
    exprs = " ".join(target["expr"] for panel in dashboard["panels"] for target in panel["targets"])
    uids = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    uids |= {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert uids == {datasource["uid"]}
    # Metric names as Triton 24.10 exports them (server docs/user_guide/metrics.md).
    for metric in (
        "nv_inference_request_success",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
    ):
        assert metric in exprs


def test_triton_and_tensorrt_images_are_the_same_release() -> None:
    def base(name: str) -> str:
        (line,) = [ln for ln in (ROOT / "build" / name).read_text().splitlines() if ln.startswith("FROM ")]
        return line.split(":")[-1]

    # A plan only deserializes in the TensorRT version that built it.
    assert base("Dockerfile.triton") == base("Dockerfile.tensorrt") == "24.10-py3"


def third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


def test_triton_image_installs_everything_the_preprocessor_imports() -> None:
    sources = [
        TEMPLATE / "beit_preprocess" / "1" / "model.py",
        *sorted((ROOT / "client" / "beit_preprocessing").glob("*.py")),
        *[ROOT / "client" / "beit_repository" / name for name in IMAGE_REPOSITORY_FILES],
    ]
    missing = [path for path in sources if not path.is_file()]
    assert sources[0].is_file() and len(sources) > 1, f"preprocessor sources not written yet: {missing}"
    imports = set().union(*(third_party_imports(path) for path in sources))
    dockerfile = TRITON_DOCKERFILE.read_text()
    pip_installs = " ".join(re.findall(r"pip install ([^\n&]+)", dockerfile)).lower()

    def pip_installed(distribution: str) -> bool:
        return f"{distribution}==" in pip_installs

    def copied(package: str) -> bool:
        return re.search(rf"^COPY client/{package}[/ ]", dockerfile, re.MULTILINE) is not None

    # How each import reaches the Triton image. numpy ships with it (the Python backend needs it),
    # triton_python_backend_utils comes with the Python backend.
    provided_by_image = {"numpy", "triton_python_backend_utils"}
    installed = {
        "PIL": pip_installed("pillow"),
        "beit_preprocessing": copied("beit_preprocessing"),
        "beit_repository": copied("beit_repository"),
    }
    unknown = imports - provided_by_image - set(installed)
    assert not unknown, f"the preprocessor imports {unknown}: install them in {TRITON_DOCKERFILE.name}"
    assert all(installed[name] for name in imports & set(installed)), installed
    ignore = (ROOT / "build" / "Dockerfile.triton.dockerignore").read_text().splitlines()
    assert "!client/beit_preprocessing/" in ignore
    for name in IMAGE_REPOSITORY_FILES:
        assert f"client/beit_repository/{name}" in dockerfile
        assert f"!client/beit_repository/{name}" in ignore


def test_triton_image_runs_the_pillow_release_the_tests_run() -> None:
    """Preprocessing is bit-exact to the checkpoint's processor only as tested: with one Pillow release."""
    (image_pin,) = re.findall(r"pillow==([\d.]+)", TRITON_DOCKERFILE.read_text())
    project_pins = re.findall(r'"pillow==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    import PIL

    assert project_pins == [image_pin] == [PIL.__version__]


def tiny_onnx(path: Path, *, layer_norms: int, height: int | str = 224) -> Path:
    x = helper.make_tensor_value_info("PIXEL_VALUES", TensorProto.FLOAT, ["batch", 3, height, 224])
    y = helper.make_tensor_value_info("LOGITS", TensorProto.FLOAT, ["batch", 3, height, 224])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [224], [1.0] * 224)
    bias = helper.make_tensor("bias", TensorProto.FLOAT, [224], [0.0] * 224)
    nodes, previous = [], "PIXEL_VALUES"
    for i in range(layer_norms):
        out = "LOGITS" if i == layer_norms - 1 else f"h{i}"
        nodes.append(
            helper.make_node("LayerNormalization", [previous, "scale", "bias"], [out], name=f"/layer.{i}/ln")
        )
        previous = out
    if not nodes:
        nodes.append(helper.make_node("Identity", ["PIXEL_VALUES"], ["LOGITS"], name="/identity"))
    graph = helper.make_graph(nodes, "tiny", [x], [y], [scale, bias])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def tensorrt_variant(repository: Path) -> Path:
    return repository / NETWORK_MODEL / VARIANTS_DIRECTORY / f"{TENSORRT_VARIANT}.pbtxt"


@pytest.mark.parametrize(("repository", "size"), [("tiny_repository", 224), ("tiny_384_repository", 384)])
def test_plan_arguments_cover_the_batchers_range_at_the_checkpoints_size_and_keep_layernorm_in_fp32(
    repository: str, size: int, request: pytest.FixtureRequest
) -> None:
    built: Path = request.getfixturevalue(repository)
    onnx_path = built / NETWORK_MODEL / "1" / "model.onnx"
    args = load_plan_args().trtexec_args(tensorrt_variant(built), onnx_path)
    assert args[:4] == [
        f"--minShapes=PIXEL_VALUES:1x3x{size}x{size}",
        f"--optShapes=PIXEL_VALUES:16x3x{size}x{size}",
        f"--maxShapes=PIXEL_VALUES:32x3x{size}x{size}",
        "--fp16",
    ]
    layer_norms = [n.name for n in onnx.load(str(onnx_path)).graph.node if n.op_type == "LayerNormalization"]
    assert len(layer_norms) == 5  # before and after attention in each of 2 layers, and the pooler's
    assert args[4:] == [
        f"--layerPrecisions={','.join(f'{name}:fp32' for name in layer_norms)}",
        "--precisionConstraints=obey",
    ]


def test_plan_arguments_refuse_the_unbuilt_template(tiny_repository: Path) -> None:
    plan_args = load_plan_args()
    with pytest.raises(plan_args.PlanArgsError, match="beit-build first"):
        plan_args.trtexec_args(
            tensorrt_variant(TEMPLATE), tiny_repository / NETWORK_MODEL / "1" / "model.onnx"
        )


def test_plan_arguments_refuse_a_graph_without_layernormalization_ops(
    tiny_repository: Path, tmp_path: Path
) -> None:
    plan_args = load_plan_args()
    with pytest.raises(plan_args.PlanArgsError, match="opset >= 17"):
        plan_args.trtexec_args(
            tensorrt_variant(tiny_repository), tiny_onnx(tmp_path / "model.onnx", layer_norms=0)
        )


def test_plan_build_script_is_valid_bash() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "build" / "tensorrt" / "build_plan.sh")], check=True)
