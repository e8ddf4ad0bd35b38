"""deploy/kubernetes/, checked without a cluster: every manifest against the Kubernetes API schemas of one
pinned release (kubernetes-validate ships them), the KServe resource against KServe's published API types,
and the manifests against each other, against docker-compose.yml and against Triton.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from beit_repository import model_config
from beit_repository.names import CPU_VARIANT, DEFAULT_VARIANT, NETWORK_MODEL, PREPROCESS_MODEL
from tests import compose

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
KUBERNETES_VERSION = "1.34.0"
"""The Kubernetes release the manifests are written for (autoscaling/v2, policy/v1, native PVC readOnly)."""
TEMPLATE = ROOT / "model_repository"
KSERVE_TYPES = ROOT / "tests" / "schemas" / "kserve-v1beta1-types.json"
# Every metric Triton 26.06 exports (server r26.06 docs/user_guide/metrics.md).
TRITON_METRICS = frozenset(
    """nv_cache_hit_duration_per_model nv_cache_miss_duration_per_model nv_cache_num_hits_per_model
    nv_cache_num_misses_per_model nv_cpu_memory_total_bytes nv_cpu_memory_used_bytes nv_cpu_utilization
    nv_energy_consumption nv_gpu_memory_total_bytes nv_gpu_memory_used_bytes nv_gpu_power_limit
    nv_gpu_power_usage nv_gpu_utilization nv_inference_compute_infer_duration_us
    nv_inference_compute_infer_summary_us nv_inference_compute_input_duration_us
    nv_inference_compute_input_summary_us nv_inference_compute_output_duration_us
    nv_inference_compute_output_summary_us nv_inference_count nv_inference_exec_count
    nv_inference_first_response_histogram_ms nv_inference_pending_request_count nv_inference_queue_duration_us
    nv_inference_queue_summary_us nv_inference_request_duration_us nv_inference_request_failure
    nv_inference_request_success nv_inference_request_summary_us nv_pinned_memory_pool_total_bytes
    nv_pinned_memory_pool_used_bytes""".split()
)


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(path.read_text())
    return document


def base_manifests() -> dict[str, dict[str, Any]]:
    return {
        path.name: load(path) for path in sorted(BASE.glob("*.yaml")) if path.name != "kustomization.yaml"
    }


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return base_manifests()


def by_kind(manifests: dict[str, dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in manifests.values() if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def compose_services(**env: str) -> dict[str, Any]:
    services: dict[str, Any] = compose.load(ROOT / "docker-compose.yml", env)["services"]
    return services


def validate(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


# -- schemas -------------------------------------------------------------------------------------------------


def test_the_base_lists_every_manifest_beside_it_and_nothing_else() -> None:
    kustomization = load(BASE / "kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(base_manifests())


@pytest.mark.parametrize("name", sorted(base_manifests()))
def test_every_base_manifest_is_valid_for_the_pinned_kubernetes_release(
    name: str, manifests: dict[str, dict[str, Any]]
) -> None:
    validate(manifests[name])


def test_the_validator_refuses_what_the_api_server_refuses(manifests: dict[str, dict[str, Any]]) -> None:
    deployment = copy.deepcopy(by_kind(manifests, "Deployment", "beit-triton"))
    container(deployment, "triton")["startupProbe"]["failureTreshold"] = 180
    with pytest.raises(kubernetes_validate.ValidationError, match="failureTreshold"):
        validate(deployment)
    hpa = copy.deepcopy(by_kind(manifests, "HorizontalPodAutoscaler", "beit-triton"))
    hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"] = [20000]
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(hpa)


def test_the_base_is_all_core_kubernetes_kinds() -> None:
    """No custom resource in the base: it applies to any cluster (KServe's lives in kserve/)."""
    groups = {m["apiVersion"] for m in base_manifests().values()}
    assert groups == {"v1", "apps/v1", "batch/v1", "autoscaling/v2", "policy/v1"}


# -- Triton --------------------------------------------------------------------------------------------------


def test_triton_runs_composes_command_with_the_default_config(manifests: dict[str, dict[str, Any]]) -> None:
    triton = container(by_kind(manifests, "Deployment", "beit-triton"), "triton")
    assert triton["command"] == compose_services()["triton"]["command"]
    assert compose.flag(triton["command"], "model-config-name") == DEFAULT_VARIANT


def test_triton_ports_are_the_ones_its_arguments_open_and_the_services_reach(
    manifests: dict[str, dict[str, Any]],
) -> None:
    deployment = by_kind(manifests, "Deployment", "beit-triton")
    triton = container(deployment, "triton")
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {
        "http": int(compose.flag(triton["command"], "http-port")),
        "grpc": int(compose.flag(triton["command"], "grpc-port")),
        "metrics": int(compose.flag(triton["command"], "metrics-port")),
    }
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    for name in ("beit-triton", "beit-triton-grpc"):
        service = by_kind(manifests, "Service", name)
        assert service["spec"]["selector"] == labels
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports and port["port"] == ports[port["targetPort"]]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]


def test_grpc_is_balanced_per_request_through_a_headless_service(
    manifests: dict[str, dict[str, Any]],
) -> None:
    headless = by_kind(manifests, "Service", "beit-triton-grpc")
    assert headless["spec"]["clusterIP"] == "None"
    assert [p["appProtocol"] for p in headless["spec"]["ports"]] == ["kubernetes.io/h2c"]


def test_probes_tell_whether_the_models_answer_and_tolerate_engine_builds(
    manifests: dict[str, dict[str, Any]],
) -> None:
    triton = container(by_kind(manifests, "Deployment", "beit-triton"), "triton")
    for probe in ("startupProbe", "livenessProbe"):
        assert triton[probe]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    # Readiness is the reliability contract's probe, the same command as compose's healthcheck.
    assert (
        triton["readinessProbe"]["exec"]["command"] == compose_services()["triton"]["healthcheck"]["test"][1:]
    )
    startup = triton["startupProbe"]
    startup_budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert startup_budget >= 30 * 60
    assert float(compose.flag(triton["command"], "ready-timeout")) >= startup_budget
    assert triton["readinessProbe"]["timeoutSeconds"] > 10  # the probe's own --timeout


def test_triton_gets_a_gpu_and_shared_memory_for_the_python_backend(
    manifests: dict[str, dict[str, Any]],
) -> None:
    spec = by_kind(manifests, "Deployment", "beit-triton")["spec"]["template"]["spec"]
    triton = container(by_kind(manifests, "Deployment", "beit-triton"), "triton")
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    volumes = {v["name"]: v for v in spec["volumes"]}
    (shm,) = [m for m in triton["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
    # A full batch of 384-pixel images is 57 MB per preprocessor instance (4 of them).
    assert volumes[shm["name"]]["emptyDir"]["sizeLimit"] in {"1Gi", "2Gi", "4Gi"}


def test_the_build_job_fills_the_claim_triton_serves_read_only(manifests: dict[str, dict[str, Any]]) -> None:
    job = by_kind(manifests, "Job", "beit-build")["spec"]["template"]["spec"]
    (build,) = job["containers"]
    target = compose.flag(build["args"], "repository")
    (mount,) = [m for m in build["volumeMounts"] if m["mountPath"] == target]
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in job["volumes"]
        if "persistentVolumeClaim" in v
    }
    claim = claims[mount["name"]]
    spec = by_kind(manifests, "Deployment", "beit-triton")["spec"]["template"]["spec"]
    triton = container(by_kind(manifests, "Deployment", "beit-triton"), "triton")
    repository = compose.flag(triton["command"], "repository")
    (models,) = [m for m in triton["volumeMounts"] if m["mountPath"] == repository]
    (volume,) = [v for v in spec["volumes"] if v["name"] == models["name"]]
    assert volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True} and models["readOnly"]
    assert by_kind(manifests, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]
    assert build["args"][build["args"].index("--model") + 1] == compose_services()["build"]["command"][1]


# -- engine cache --------------------------------------------------------------------------------------------


def engine_cache_root() -> str:
    config = model_config.read(TEMPLATE / NETWORK_MODEL / "config.pbtxt")
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    return str(accelerator.parameters["trt_engine_cache_path"])


def script(deployment: dict[str, Any], name: str) -> str:
    spec = deployment["spec"]["template"]["spec"]
    (found,) = [c for c in [*spec["initContainers"], *spec["containers"]] if c["name"] == name]
    assert found["command"] == ["sh", "-c"]
    (text,) = found["args"]
    return str(text)


def test_each_pod_builds_into_its_own_cache_seeded_from_and_published_to_the_shared_one(
    manifests: dict[str, dict[str, Any]],
) -> None:
    deployment = by_kind(manifests, "Deployment", "beit-triton")
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {
        c["name"]: {m["mountPath"]: m for m in c["volumeMounts"]}
        for c in [*spec["initContainers"], *spec["containers"]]
    }
    own = mounts["triton"][engine_cache_root()]
    assert "emptyDir" in volumes[own["name"]]
    shared = mounts["publish-engine-cache"]["/trt_shared"]
    assert volumes[shared["name"]]["persistentVolumeClaim"]["claimName"] == "beit-engine-cache"
    assert (
        mounts["seed-engine-cache"]["/trt_shared"]["readOnly"]
        and mounts["publish-engine-cache"]["/trt_cache"]["readOnly"]
    )
    assert (
        mounts["seed-engine-cache"]["/trt_cache"]["name"]
        == own["name"]
        == mounts["publish-engine-cache"]["/trt_cache"]["name"]
    )
    assert all(
        container(deployment, "triton")["image"] == c["image"]
        for c in [*spec["initContainers"], *spec["containers"]]
    )


def run_script(text: str, cache: Path, shared: Path, url: str, env: dict[str, str]) -> str:
    text = text.replace("/trt_cache", str(cache)).replace("/trt_shared", str(shared))
    text = text.replace("http://127.0.0.1:8000", url)
    result = subprocess.run(["sh", "-c", text], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_engines_are_seeded_whole_and_published_by_rename_once_triton_is_ready(
    manifests: dict[str, dict[str, Any]], triton_server: Any, tmp_path: Path
) -> None:
    import os
    import sys

    deployment = by_kind(manifests, "Deployment", "beit-triton")
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "HOSTNAME": "pod-a",
    }
    shared, first, second = tmp_path / "shared", tmp_path / "pod-a", tmp_path / "pod-b"
    for directory in (shared, first, second):
        directory.mkdir()
    # Pod A built the engine of one model and the timing cache; a publish of pod C is in flight.
    (first / "3f2a").mkdir()
    (first / "3f2a" / "TensorrtExecutionProvider_TRTKernel_graph_main_1_0_0_fp16_sm90.engine").write_bytes(
        b"e"
    )
    (first / "TensorrtExecutionProvider_cache_sm90.timing").write_bytes(b"t")
    publish = script(deployment, "publish-engine-cache")
    assert publish.rstrip().endswith("exec sleep infinity")
    publish = publish.rstrip().removesuffix("exec sleep infinity")
    out = run_script(publish, first, shared, triton_server.http_url, env)
    assert sorted(out.split()) == sorted(
        ["published", "./3f2a/TensorrtExecutionProvider_TRTKernel_graph_main_1_0_0_fp16_sm90.engine"]
        + ["published", "./TensorrtExecutionProvider_cache_sm90.timing"]
    )
    (shared / "3f2a" / "x.engine.publishing.pod-c").write_bytes(b"half")
    # Pod B starts: it gets pod A's files, not the one still being published.
    out = run_script(script(deployment, "seed-engine-cache"), second, shared, triton_server.http_url, env)
    assert out.strip() == "seeded 2 engine cache files"
    assert sorted(str(p.relative_to(second)) for p in second.rglob("*") if p.is_file()) == sorted(
        [
            "3f2a/TensorrtExecutionProvider_TRTKernel_graph_main_1_0_0_fp16_sm90.engine",
            "TensorrtExecutionProvider_cache_sm90.timing",
        ]
    )
    # Publishing again adds nothing: files already there are never rewritten.
    assert run_script(publish, second, shared, triton_server.http_url, {**env, "HOSTNAME": "pod-b"}) == ""


# -- autoscaling and metrics ---------------------------------------------------------------------------------


def adapter_rules(manifests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    config = yaml.safe_load(by_kind(manifests, "ConfigMap", "beit-prometheus-adapter")["data"]["config.yaml"])
    rules: list[dict[str, Any]] = config["rules"]
    return rules


def metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\bnv_[a-z_]+\b", expression))


def test_the_hpa_scales_the_deployment_on_the_adapters_queue_time_metric(
    manifests: dict[str, dict[str, Any]],
) -> None:
    hpa = by_kind(manifests, "HorizontalPodAutoscaler", "beit-triton")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "beit-triton",
    }
    (metric,) = hpa["spec"]["metrics"]
    (rule,) = adapter_rules(manifests)
    assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 600


def test_the_adapter_rule_divides_queue_time_by_requests_of_models_that_exist(
    manifests: dict[str, dict[str, Any]],
) -> None:
    (rule,) = adapter_rules(manifests)
    query = rule["metricsQuery"]
    assert metric_names(rule["seriesQuery"]) == {"nv_inference_queue_duration_us"}
    assert metric_names(query) == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    assert metric_names(query) <= TRITON_METRICS
    for template in ("<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert template in query
    models = set(re.findall(r'model=~?"([^"]+)"', query))
    assert models == {f"{PREPROCESS_MODEL}|{NETWORK_MODEL}", NETWORK_MODEL}


def test_the_pdb_covers_the_triton_pods_and_never_blocks_a_drain(
    manifests: dict[str, dict[str, Any]],
) -> None:
    pdb = by_kind(manifests, "PodDisruptionBudget", "beit-triton")
    labels = by_kind(manifests, "Deployment", "beit-triton")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]


def dashboard_metrics() -> set[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dashboards" / "beit-triton.json").read_text())
    return set().union(*(metric_names(t["expr"]) for p in dashboard["panels"] for t in p["targets"]))


def test_every_metric_of_the_dashboards_and_the_adapter_is_one_triton_exports(
    manifests: dict[str, dict[str, Any]],
) -> None:
    (rule,) = adapter_rules(manifests)
    used = dashboard_metrics() | metric_names(rule["metricsQuery"])
    assert used and used <= TRITON_METRICS, used - TRITON_METRICS


def test_the_per_model_metrics_used_are_exported_by_a_running_triton(triton_server: Any) -> None:
    """The embedded Triton (2.51, no GPU) exports every per-model counter used; GPU ones need a GPU."""
    with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as response:
        exported = metric_names(response.read().decode())
    used = dashboard_metrics() | {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    assert {m for m in used if not m.startswith("nv_gpu_")} <= exported


# -- images --------------------------------------------------------------------------------------------------


def images(document: Any) -> Iterator[str]:
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "image" and isinstance(value, str):
                yield value
            else:
                yield from images(value)
    elif isinstance(document, list):
        for item in document:
            yield from images(item)


def test_image_tags_are_in_step_with_docker_compose(manifests: dict[str, dict[str, Any]]) -> None:
    services = compose_services()
    tag = services["triton"]["image"].rsplit(":", 1)[1]
    used = set(images(list(manifests.values()))) | set(
        images(load(KUBERNETES / "kserve" / "inferenceservice.yaml"))
    )
    # The gateway's compose service arrives with issue 10; until then its image follows the same pattern.
    gateway = services["gateway"]["image"] if "gateway" in services else f"beit-triton/gateway:{tag}"
    assert used == {services["triton"]["image"], services["build"]["image"], gateway}
    assert all(image.endswith(f":{tag}") for image in used)


# -- gateway -------------------------------------------------------------------------------------------------


def test_the_gateway_reaches_tritons_grpc_service_and_is_probed_on_health_and_ready(
    manifests: dict[str, dict[str, Any]],
) -> None:
    deployment = by_kind(manifests, "Deployment", "beit-gateway")
    gateway = container(deployment, "gateway")
    (port,) = gateway["ports"]
    assert "command" not in gateway  # the image's ENTRYPOINT, beit-gateway, takes these arguments
    assert int(compose.flag(gateway["args"], "port")) == port["containerPort"] == 8080
    triton = by_kind(manifests, "Service", "beit-triton")
    grpc_port = {p["name"]: p["port"] for p in triton["spec"]["ports"]}["grpc"]
    assert compose.flag(gateway["args"], "triton-url") == f"grpc://{triton['metadata']['name']}:{grpc_port}"
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    service = by_kind(manifests, "Service", "beit-gateway")
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


# -- CPU overlay ---------------------------------------------------------------------------------------------


def json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 test, replace, remove and add, as kustomize applies them."""
    patched = copy.deepcopy(document)
    for operation in operations:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        target: Any = patched
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        key: Any = int(last) if isinstance(target, list) else last
        if operation["op"] == "test":
            assert target[key] == operation["value"], operation
        elif operation["op"] in {"replace", "add"}:
            target[key] = operation["value"]
        elif operation["op"] == "remove":
            del target[key]
        else:
            raise ValueError(operation)
    return patched


def test_the_cpu_overlay_serves_the_cpu_variant_without_gpus(manifests: dict[str, dict[str, Any]]) -> None:
    overlay = load(KUBERNETES / "overlays" / "cpu" / "kustomization.yaml")
    assert overlay["resources"] == ["../../base"]
    (patch,) = overlay["patches"]
    assert patch["target"]["kind"] == "Deployment" and patch["target"]["name"] == "beit-triton"
    operations = yaml.safe_load((KUBERNETES / "overlays" / "cpu" / patch["path"]).read_text())
    deployment = json_patch(by_kind(manifests, "Deployment", "beit-triton"), operations)
    validate(deployment)
    triton = container(deployment, "triton")
    assert compose.flag(triton["command"], "model-config-name") == CPU_VARIANT
    assert (TEMPLATE / NETWORK_MODEL / "configs" / f"{CPU_VARIANT}.pbtxt").is_file()
    assert "nvidia.com/gpu" not in json.dumps(deployment)


# -- KServe --------------------------------------------------------------------------------------------------


def kserve_errors(value: Any, type_name: str, types: dict[str, dict[str, str]], path: str = "") -> list[str]:
    """`value` against KServe's type `type_name` (kserve SDK's openapi_types); Kubernetes types are left to
    the Kubernetes schemas."""
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return [f"{path}: not a list"]
        return [
            e
            for i, item in enumerate(value)
            for e in kserve_errors(item, type_name[5:-1], types, f"{path}[{i}]")
        ]
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        return [e for k, item in value.items() for e in kserve_errors(item, inner, types, f"{path}.{k}")]
    simple = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}
    if type_name in simple:
        ok = isinstance(value, simple[type_name]) and not (type_name == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: {value!r} is not {type_name}"]
    if type_name not in types:
        return [] if isinstance(value, dict) else [f"{path}: {type_name} must be an object"]
    if not isinstance(value, dict):
        return [f"{path}: {type_name} must be an object"]
    fields = types[type_name]
    errors = [f"{path}.{key}: no such field in {type_name}" for key in value if key not in fields]
    return errors + [
        e
        for key, item in value.items()
        if key in fields
        for e in kserve_errors(item, fields[key], types, f"{path}.{key}")
    ]


@pytest.fixture(scope="module")
def kserve_types() -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = json.loads(KSERVE_TYPES.read_text())["types"]
    return types


def inference_service() -> dict[str, Any]:
    return load(KUBERNETES / "kserve" / "inferenceservice.yaml")


def test_the_inference_service_matches_kserves_published_types(
    kserve_types: dict[str, dict[str, str]],
) -> None:
    service = inference_service()
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    assert kserve_errors(service, "V1beta1InferenceService", kserve_types) == []
    broken = copy.deepcopy(service)
    broken["spec"]["predictor"]["model"]["modelFromat"] = {"name": "triton"}
    broken["spec"]["predictor"]["minReplicas"] = "1"
    assert sorted(kserve_errors(broken, "V1beta1InferenceService", kserve_types)) == [
        ".spec.predictor.minReplicas: '1' is not int",
        ".spec.predictor.model.modelFromat: no such field in V1beta1ModelSpec",
    ]


def test_the_inference_services_kubernetes_parts_are_valid_as_a_pod(
    kserve_types: dict[str, dict[str, str]],
) -> None:
    """KServe's predictor embeds a PodSpec and its model a Container: the fields KServe adds removed, what
    remains must be a valid Pod for the pinned Kubernetes release."""
    predictor = inference_service()["spec"]["predictor"]
    model = predictor["model"]
    kserve_only_model = {
        "modelFormat",
        "protocolVersion",
        "storageUri",
        "runtime",
        "runtimeVersion",
        "storage",
    }
    kserve_only_predictor = {"minReplicas", "maxReplicas", "model"}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "beit-predictor"},
        "spec": {
            **{k: v for k, v in predictor.items() if k not in kserve_only_predictor},
            "containers": [
                {"name": "kserve-container", **{k: v for k, v in model.items() if k not in kserve_only_model}}
            ],
        },
    }
    validate(pod)
    assert model["modelFormat"] == {"name": "triton"} and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "pvc://beit-model-repository"
    assert {m["mountPath"] for m in model["volumeMounts"]} == {engine_cache_root(), "/dev/shm"}
