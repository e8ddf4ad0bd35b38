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
OUTPUT = BUILT_REPOSITORY.parent
"""What the build and tensorrt steps mount and hand to the checkout's owner."""
TRITON_DOCKERFILE = ROOT / "build" / "Dockerfile.triton"


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
        "https",
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
    command = triton["command"]
    assert (compose.flag(command, "http-port"), compose.flag(command, "grpc-port")) == ("8000", "8001")
    assert compose.flag(triton["command"], "metrics-port") == "8002"
    # The reliability contract: healthy only when a real classification answers (beit-serve probe).
    assert triton["healthcheck"]["test"] == [
        "CMD",
        "beit-serve",
        "probe",
        "--url",
        f"http://127.0.0.1:{compose.flag(triton['command'], 'http-port')}",
        "--timeout",
        "10",
    ]


def test_triton_runs_the_containers_tritonserver_under_beit_serve_with_room_for_engine_builds(
    services: dict[str, Any],
) -> None:
    triton = services["triton"]
    assert triton["command"][0] == "beit-serve"
    assert compose.flag(triton["command"], "tritonserver") == "/opt/tritonserver/bin/tritonserver"
    assert compose.flag(triton["command"], "backend-directory") == "/opt/tritonserver/backends"
    # Engine builds happen before Triton listens: neither beit-serve's readiness wait nor the healthcheck's
    # start period may run out first (minutes per GPU for BEiT-large).
    assert float(compose.flag(triton["command"], "ready-timeout")) >= 30 * 60
    assert triton["healthcheck"]["start_period"] == "30m"


def test_the_schema_rejects_what_compose_rejects() -> None:
    model = yaml.safe_load(COMPOSE_FILE.read_text())
    assert compose.schema_errors(model) == []
    unknown_key = copy.deepcopy(model)
    unknown_key["services"]["triton"]["gpu"] = "all"
    assert compose.schema_errors(unknown_key) == [
        "services.triton: Unevaluated properties are not allowed ('gpu' was unexpected)"
    ]
    wrong_type = copy.deepcopy(model)
    wrong_type["services"]["triton"]["ports"] = "8000:8000"
    assert "services.triton.ports: '8000:8000' is not of type 'array'" in compose.schema_errors(wrong_type)
    misspelt_service = copy.deepcopy(model)
    misspelt_service["service"] = misspelt_service.pop("services")
    assert compose.schema_errors(misspelt_service)


def test_loading_reports_a_file_compose_refuses(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    shm_size:", "    shm_sizes:", 1))
    unexpected = r"\nservices\.triton: Unevaluated properties are not allowed \('shm_sizes' was unexpected\)"
    with pytest.raises(compose.ComposeError, match=unexpected):
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
    repository = compose.flag(triton["command"], "repository")
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
    assert compose.flag(services["triton"]["command"], "model-config-name") == "config"
    for variant in ("tensorrt", "cpu"):
        chosen = compose_config(TRITON_MODEL_CONFIG=variant)["services"]["triton"]
        assert compose.flag(chosen["command"], "model-config-name") == variant
        assert (TEMPLATE / "beit_model" / "configs" / f"{variant}.pbtxt").is_file()


def test_build_step_writes_the_repository_from_the_chosen_checkpoint(services: dict[str, Any]) -> None:
    build = services["build"]
    assert not gpu_reserved(build)
    command = build["command"]
    assert command[command.index("--model") + 1] == "microsoft/beit-base-patch16-224-pt22k-ft22k"
    target = command[command.index("--repository") + 1]
    assert target == "/workspace/output/model_repository"
    assert volumes(build)["/workspace/output"] == Mount("bind", str(OUTPUT), read_only=False)
    hf_cache = volumes(build)["/root/.cache/huggingface"]
    assert hf_cache.type == "volume" and hf_cache.source in compose_config()["volumes"]
    assert build["environment"]["HF_TOKEN"] == ""
    other = compose_config(MODEL="microsoft/beit-large-patch16-224")["services"]["build"]["command"]
    assert other[other.index("--model") + 1] == "microsoft/beit-large-patch16-224"


def test_tensorrt_step_has_a_gpu_and_writes_into_the_repository(services: dict[str, Any]) -> None:
    tensorrt = services["tensorrt"]
    assert gpu_reserved(tensorrt)
    (target,) = tensorrt["command"]
    assert target == "/workspace/output/model_repository"
    assert volumes(tensorrt)["/workspace/output"] == Mount("bind", str(OUTPUT), read_only=False)


def dockerfile_entrypoint(name: str) -> list[str]:
    (line,) = [ln for ln in (ROOT / "build" / name).read_text().splitlines() if ln.startswith("ENTRYPOINT ")]
    entrypoint: list[str] = json.loads(line.removeprefix("ENTRYPOINT "))
    return entrypoint


@pytest.mark.parametrize(
    ("service", "dockerfile"), [("build", "Dockerfile.build"), ("tensorrt", "Dockerfile.tensorrt")]
)
def test_steps_that_write_on_the_host_hand_their_output_to_the_checkouts_owner(
    services: dict[str, Any], service: str, dockerfile: str
) -> None:
    """They run as root in the container; run_as_owner.sh gives what they wrote to the owner of the mounted
    checkout (tests/test_images.py runs it)."""
    entrypoint = dockerfile_entrypoint(dockerfile)
    assert entrypoint[:3] == ["run_as_owner.sh", "/project", "/workspace/output"]
    mounts = volumes(services[service])
    assert mounts["/project"] == Mount("bind", str(ROOT), read_only=True)
    assert mounts["/workspace/output"] == Mount("bind", str(OUTPUT), read_only=False)
    assert (
        "COPY build/run_as_owner.sh /usr/local/bin/run_as_owner.sh"
        in (ROOT / "build" / dockerfile).read_text()
    )
    ignore = (ROOT / "build" / f"{dockerfile}.dockerignore").read_text().splitlines()
    assert "!build/run_as_owner.sh" in ignore


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
    assert targets == [f"triton:{compose.flag(services['triton']['command'], 'metrics-port')}"]


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


def dockerfile_tag_default(name: str) -> str:
    (default,) = re.findall(r"^ARG TRITON_TAG=(\S+)$", (ROOT / "build" / name).read_text(), re.MULTILINE)
    return default


def compose_tag_defaults() -> set[str]:
    return set(re.findall(r"\$\{TRITON_TAG:-([^}]+)\}", COMPOSE_FILE.read_text()))


def test_one_triton_tag_variable_sets_both_base_images_and_every_image_tag(services: dict[str, Any]) -> None:
    """TRITON_TAG, one default everywhere: a plan only deserializes in the TensorRT version that built it."""
    (tag,) = compose_tag_defaults()
    assert tag == dockerfile_tag_default("Dockerfile.triton") == dockerfile_tag_default("Dockerfile.tensorrt")
    for name in ("Dockerfile.triton", "Dockerfile.tensorrt"):
        (base,) = [ln for ln in (ROOT / "build" / name).read_text().splitlines() if ln.startswith("FROM ")]
        assert base.endswith(":${TRITON_TAG}-py3"), base
    built = {name: service for name, service in services.items() if "build" in service}
    assert {"triton", "build", "tensorrt", "locust-master", "locust-worker"} <= set(built)
    assert all(service["image"].endswith(f":{tag}") for service in built.values())
    for name in ("triton", "tensorrt"):
        assert built[name]["build"]["args"] == {"TRITON_TAG": tag}
    other = compose_config(TRITON_TAG="26.07")["services"]
    assert other["triton"]["image"] == "beit-triton/tritonserver:26.07"
    assert other["tensorrt"]["build"]["args"] == {"TRITON_TAG": "26.07"}


def test_the_triton_release_runs_this_projects_python() -> None:
    """26.06's container Python is 3.12 (server r26.06 docs/introduction/compatibility.md: Python 3.12.3 from
    24.12 on; 24.10's was 3.10, which requires-python refused)."""
    requires = re.search(r'requires-python = ">=3\.(\d+),<3\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert requires is not None
    low, high = int(requires.group(1)), int(requires.group(2))
    assert dockerfile_tag_default("Dockerfile.triton") >= "24.12"
    assert low <= 12 < high


def third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


def test_triton_image_installs_this_project_non_editable_with_no_extra() -> None:
    """The Python backend's stub runs the container's Python: the project installed into it carries
    beit_preprocessing and beit_repository, and its pins (Pillow among them) are the ones the tests run.
    tests/test_images.py installs the same way and runs the image's commands."""
    dockerfile = TRITON_DOCKERFILE.read_text()
    assert re.findall(r"pip install ([^\n&]+)", dockerfile) == [". \\"]
    sources = [
        TEMPLATE / "beit_preprocess" / "1" / "model.py",
        *sorted((ROOT / "client" / "beit_preprocessing").glob("*.py")),
        ROOT / "client" / "beit_repository" / "names.py",
    ]
    imports = set().union(*(third_party_imports(path) for path in sources))
    base_dependencies = {"numpy", "PIL"}  # numpy==, pillow== in [project] dependencies
    wheel_packages = {"beit_preprocessing", "beit_repository"}
    assert imports <= base_dependencies | wheel_packages | {"triton_python_backend_utils"}, imports
    ignore = (ROOT / "build" / "Dockerfile.triton.dockerignore").read_text().splitlines()
    for needed in ("!pyproject.toml", "!README.md", "!model_repository/", "!client/", "!serve/"):
        assert needed in ignore


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
