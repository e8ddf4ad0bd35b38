"""The load-test corpus, the capacity arithmetic, the benchmark's pieces, and short live runs of Locust and
the benchmark against the embedded server with the tiny model."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from beit_repository.model_config import config_files, read
from beit_repository.template import template_directory
from loadtest.benchmark import report
from loadtest.benchmark.repository import with_preprocessor, without_dynamic_batching
from loadtest.benchmark.serving import statistics_delta, sweep
from loadtest.benchmark.timing import closed_loop
from loadtest.capacity import Snapshot, StepResult, capacity_line, find_capacity, measure_window
from loadtest.corpus import folder_corpus, photo_corpus, synthetic_corpus
from loadtest.urls import url_for_protocol

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_REPOSITORY = template_directory()


def test_the_generated_corpus_is_the_same_for_the_same_seed_and_mixes_sizes() -> None:
    corpus = synthetic_corpus(20, seed=3)
    assert corpus == synthetic_corpus(20, seed=3)
    assert corpus != synthetic_corpus(20, seed=4)
    sizes = [Image.open(io.BytesIO(data)).size for data in corpus]
    assert sizes.count((640, 480)) == 10
    assert len(set(sizes)) >= 5
    assert all(Image.open(io.BytesIO(data)).format == "JPEG" for data in corpus)


def test_photo_corpus_images_are_vga_jpegs_of_photo_like_size() -> None:
    for data in photo_corpus(4):
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size) == ("JPEG", (640, 480))
        # Flat synthetic images compress to a few KB; camera VGA JPEGs are tens of KB.
        assert len(data) > 20_000


def test_folder_corpus_sends_the_folders_image_files_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    first, second = synthetic_corpus(2)
    (tmp_path / "a.jpg").write_bytes(first)
    (tmp_path / "sub" / "b.JPEG").write_bytes(second)
    (tmp_path / "notes.txt").write_text("not an image")
    assert folder_corpus(tmp_path) == [first, second]
    with pytest.raises(FileNotFoundError):
        folder_corpus(tmp_path / "sub" / "missing")


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("http://host:8000", "http", "http://host:8000"),
        ("https://host", "http", "https://host"),
        ("http://host:9000", "grpc", "grpc://host:8001"),
        ("grpc://host:9001", "http", "http://host:8000"),
        ("host:8001", "grpc", "grpc://host:8001"),
    ],
)
def test_one_host_gives_the_url_of_either_protocol(url: str, protocol: str, expected: str) -> None:
    assert url_for_protocol(url, protocol) == expected


def _step(users: int, p95_ms: float, failures: int = 0, requests: int = 100) -> StepResult:
    return StepResult(
        users, 10.0, requests, failures, requests / 10, failures / requests, 1.0, p95_ms, p95_ms
    )


def test_a_step_window_counts_only_the_requests_inside_it() -> None:
    before = Snapshot(10.0, 100, 1, {10: 90, 500: 10})
    after = Snapshot(20.0, 300, 3, {10: 90, 20: 194, 500: 10, 900: 6})
    step = measure_window(4, before, after)
    assert (step.requests, step.failures, step.requests_per_s) == (200, 2, 20.0)
    assert (step.p50_ms, step.p95_ms, step.p99_ms) == (20.0, 20.0, 900.0)


def test_capacity_is_the_last_step_that_held_before_the_slo_broke() -> None:
    steps = [_step(2, 100), _step(4, 200), _step(6, 900), _step(8, 100)]
    assert find_capacity(steps, 500, 0.01) == steps[1]
    assert capacity_line(steps, 500, 0.01).startswith("CAPACITY: 4 users, 10.00 req/s")
    with_failures = [_step(2, 100), _step(4, 100, failures=5)]
    assert find_capacity(with_failures, 500, 0.01) == with_failures[0]


def test_capacity_is_none_when_the_first_step_breaks_and_a_bound_when_none_did() -> None:
    assert find_capacity([_step(2, 900)], 500, 0.01) is None
    assert "none" in capacity_line([_step(2, 900)], 500, 0.01)
    assert "at least" in capacity_line([_step(2, 100), _step(4, 100)], 500, 0.01)


def test_the_no_batching_copy_differs_from_the_repository_only_in_dynamic_batching(tmp_path: Path) -> None:
    copy = without_dynamic_batching(TEMPLATE_REPOSITORY, tmp_path / "copy")
    originals = config_files(TEMPLATE_REPOSITORY)
    assert [p.relative_to(TEMPLATE_REPOSITORY) for p in originals] == [
        p.relative_to(copy) for p in config_files(copy)
    ]
    batched = 0
    for original in originals:
        expected = read(original)
        batched += expected.HasField("dynamic_batching")
        expected.ClearField("dynamic_batching")
        assert read(copy / original.relative_to(TEMPLATE_REPOSITORY)) == expected
    assert batched >= 2
    # The template itself is untouched (configs are rewritten, not edited through hard links).
    assert read(TEMPLATE_REPOSITORY / "beit_preprocess" / "config.pbtxt").HasField("dynamic_batching")


def test_the_per_core_preprocessor_copy_changes_only_the_preprocessors_layout_and_mode(
    tmp_path: Path,
) -> None:
    copy = with_preprocessor(TEMPLATE_REPOSITORY, tmp_path / "copy", mode="fast", instances=3)
    for original in config_files(TEMPLATE_REPOSITORY):
        expected = read(original)
        if expected.name == "beit_preprocess":
            expected.parameters["mode"].string_value = "fast"
            expected.parameters["decode_threads"].string_value = "1"
            for group in expected.instance_group:
                group.count = 3
        assert read(copy / original.relative_to(TEMPLATE_REPOSITORY)) == expected


def test_closed_loop_counts_failures_and_images_of_each_call() -> None:
    calls = iter(range(10**9))

    def factory(_index: int):
        def call() -> int:
            if next(calls) % 2:
                raise RuntimeError("every other call fails")
            return 3

        return call

    result = closed_loop(factory, concurrency=2, duration_s=0.3, warmup_s=0.05, batch_size=3)
    assert result.calls > 0 and result.failures > 0
    assert result.images == 3 * result.calls
    assert result.first_error == "RuntimeError: every other call fails"


def test_the_overhead_row_is_the_median_of_rounds_that_each_divide_in_process_by_served() -> None:
    def point(protocol: str | None, images: int, cpu_s: float) -> dict:
        return {"protocol": protocol, "concurrency": 16, "images": images, "cpu_s": cpu_s}

    # The machine slows down in the second round: both sides of that round slow together.
    rounds = [
        {"in_process": point(None, 400, 2.0), "served": [point("grpc", 300, 2.0), point("http", 300, 3.0)]},
        {"in_process": point(None, 300, 2.0), "served": [point("grpc", 200, 2.0), point("http", 200, 2.0)]},
        {"in_process": point(None, 420, 2.0), "served": [point("grpc", 330, 2.0), point("http", 350, 2.0)]},
    ]
    results = {"overhead_per_image": {"rounds": rounds}}
    rows = {row["protocol"]: row for row in report.overhead_per_image(results)}
    assert rows["grpc"]["in_process_images_per_cpu_s"] == 200
    assert rows["grpc"]["served_images_per_server_cpu_s"] == 150
    assert rows["grpc"]["round_ratios"] == pytest.approx([200 / 150, 150 / 100, 210 / 165])
    assert rows["grpc"]["ratio"] == pytest.approx(200 / 150)
    assert rows["http"]["ratio"] == pytest.approx(1.5)
    assert report.overhead_per_image({}) == []
    assert report.overhead_per_image({"overhead_per_image": {"rounds": []}}) == []


@pytest.mark.server
def test_served_points_carry_the_servers_cpu_time_from_its_processes(triton_server) -> None:
    images = photo_corpus(2)
    (point,) = sweep(
        triton_server.grpc_url, "grpc", images, [2], dynamic_batching=True,
        statistics_url=triton_server.http_url, duration_s=0.5, warmup_s=0.1,
        cpu_clock=triton_server.cpu_seconds,
    )  # fmt: skip
    assert point.measurement.failures == 0 and point.measurement.images > 0
    assert point.measurement.cpu_s is not None and point.measurement.cpu_s > 0


def test_statistics_delta_reports_what_happened_between_two_snapshots() -> None:
    def snapshot(requests: int, executions: int, batch_4: int) -> dict:
        ns = {"count": requests, "ns": requests * 2_000_000}
        stats = {key: ns for key in ("success", "queue", "compute_input", "compute_infer", "compute_output")}
        return {
            "beit_model": {
                "name": "beit_model",
                "inference_count": requests,
                "execution_count": executions,
                "inference_stats": stats,
                "batch_stats": [{"batch_size": 4, "compute_infer": {"count": batch_4, "ns": 0}}],
            }
        }

    delta = statistics_delta(snapshot(10, 10, 0), snapshot(50, 20, 10))["beit_model"]
    assert delta["requests"] == 40 and delta["executions"] == 10 and delta["mean_batch_size"] == 4.0
    assert delta["queue_ms"] == pytest.approx(2.0)
    assert delta["executions_by_batch_size"] == {"4": 10}


# ---- live runs against the shared embedded server (conftest: triton_server, tiny model) ----


def _locust(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locust", "--headless", "--corpus-size", "8", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _stats_rows(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {row["Name"]: row for row in csv.DictReader(f)}


@pytest.mark.server
@pytest.mark.parametrize("user_class", ["HttpBeitUser", "GrpcBeitUser"])
def test_locust_runs_the_sdk_users_headless_without_failures(
    triton_server, user_class: str, tmp_path: Path
) -> None:
    host = triton_server.grpc_url if user_class == "GrpcBeitUser" else triton_server.http_url
    prefix = tmp_path / "run"
    result = _locust(
        "-f", "loadtest/locustfile.py", "-u", "2", "-r", "2", "-t", "6s", "--host", host,
        "--csv", str(prefix), "--html", str(tmp_path / "report.html"), user_class,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _stats_rows(prefix)
    assert int(rows["classify"]["Request Count"]) > 0
    assert rows["classify"]["Type"] == ("grpc" if user_class == "GrpcBeitUser" else "http")
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert (tmp_path / "report.html").stat().st_size > 0


@pytest.mark.server
def test_one_run_drives_both_protocols_on_their_own_non_default_ports(triton_server, tmp_path: Path) -> None:
    prefix = tmp_path / "both"
    # The fixture serves on free ports; without --grpc-host the gRPC users would go to port 8001.
    result = _locust(
        "-f", "loadtest/locustfile.py", "-u", "2", "-r", "2", "-t", "6s", "--csv", str(prefix),
        "--host", triton_server.http_url, "--grpc-host", triton_server.grpc_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(f"{prefix}_stats.csv", newline="") as f:
        rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
    for protocol in ("http", "grpc"):
        assert int(rows[protocol, "classify"]["Request Count"]) > 0, protocol
        assert int(rows[protocol, "classify"]["Failure Count"]) == 0, protocol


@pytest.mark.server
def test_the_capacity_shape_steps_users_and_writes_the_capacity(triton_server, tmp_path: Path) -> None:
    prefix = tmp_path / "capacity"
    # Run from another directory: the locustfiles must find their package wherever locust starts.
    result = _locust(
        "-f", f"{ROOT}/loadtest/locustfile.py,{ROOT}/loadtest/shape.py", "--host", triton_server.http_url,
        "--csv", str(prefix), "HttpBeitUser", "--step-users", "1", "--step-duration-s", "3",
        "--step-warmup-s", "1", "--max-users", "2", "--slo-p95-ms", "60000",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(Path(f"{prefix}_capacity.json").read_text())
    assert [step["users"] for step in report["steps"]] == [1, 2]
    assert report["capacity"]["users"] == 2 and report["capacity"]["requests_per_s"] > 0
    assert "CAPACITY: 2 users" in result.stdout


def run_benchmark(
    checkpoint: Path, out: Path, *options: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`python -m loadtest.benchmark` on `checkpoint` with short windows and a small corpus: its output and
    benchmark.json."""
    result = subprocess.run(
        [
            sys.executable, "-m", "loadtest.benchmark", "--model", str(checkpoint), "--out", str(out),
            "--duration-s", "0.5", "--warmup-s", "0.2", "--corpus-size", "4", *options,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads((out / "benchmark.json").read_text())


@pytest.mark.server
def test_the_benchmark_writes_its_json_and_plots(
    triton_server, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    result, results = run_benchmark(
        tiny_checkpoint, out,
        "--url", triton_server.http_url, "--grpc-url", triton_server.grpc_url,
        "--concurrency", "1", "2", "--ort-batch-sizes", "1", "2",
    )  # fmt: skip
    sections = {"environment", "hf_pipeline", "onnxruntime", "preprocessing", "serving", "triton_statistics"}
    assert set(results) >= sections | {"targets"}
    assert {"batches", "best", "end_to_end_batch_1"} <= set(results["onnxruntime"])
    assert {"in_process", "stages_ms", "served", "fast_vs_exact"} <= set(results["preprocessing"])
    assert {(p["protocol"], p["concurrency"]) for p in results["serving"]} == {
        (protocol, c) for protocol in ("http", "grpc") for c in (1, 2)
    }
    assert all(p["failures"] == 0 and p["images_per_s"] > 0 for p in results["serving"])
    assert {"beit", "beit_preprocess", "beit_model"} <= set(results["triton_statistics"][0]["models"])
    # Served preprocessing per core needs the server's CPU time, which a --url server elsewhere hides.
    for target in results["targets"]:
        remote_only = target["name"].startswith(("served preprocessing", "served gRPC CPU per image"))
        assert target["passed"] is None if remote_only else target["passed"] in (True, False), target
    # Without the server's CPU time there is no overhead row, and no CPU plot.
    assert results["overhead_per_image"]["rounds"] == []
    for plot in ("throughput.png", "latency.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")
    assert "targets" in result.stdout and ("PASS" in result.stdout or "FAIL" in result.stdout)


@pytest.mark.server
def test_the_benchmark_on_its_own_server_reads_cpu_per_image_in_alternating_rounds(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    result, results = run_benchmark(
        tiny_checkpoint, out,
        "--concurrency", "1", "--ort-batch-sizes", "1", "--overhead-rounds", "2", "--protocols", "grpc",
        "--skip-pipeline", "--skip-no-batching", "--skip-int8",
    )  # fmt: skip
    rounds = results["overhead_per_image"]["rounds"]
    assert len(rounds) == 2
    for measured in rounds:
        assert measured["in_process"]["cpu_s"] > 0
        assert [(m["protocol"], m["concurrency"], m["failures"]) for m in measured["served"]] == [
            ("grpc", report.OVERHEAD_CONCURRENCY, 0)
        ]
        assert measured["served"][0]["cpu_s"] > 0
    (row,) = results["overhead_per_image"]["ratios"]
    assert len(row["round_ratios"]) == 2 and row["ratio"] > 0
    (target,) = [t for t in results["targets"] if t["name"].startswith("served gRPC CPU per image")]
    assert target["passed"] == (row["ratio"] <= report.SERVING_CPU_OVERHEAD)
    assert (out / "cpu.png").read_bytes().startswith(b"\x89PNG")
    assert "medians of 2 rounds" in result.stdout


@pytest.mark.server
def test_the_int8_benchmark_compares_served_and_in_process_int8_with_fp32(tmp_path: Path) -> None:
    out = tmp_path / "int8"
    result = subprocess.run(
        [
            sys.executable, "-m", "loadtest.benchmark.int8", "--model", "random-tiny", "--out", str(out),
            "--duration-s", "0.5", "--warmup-s", "0.2", "--concurrency", "2", "--corpus-size", "4",
            "--agreement-photos", "16",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    int8 = json.loads((out / "int8.json").read_text())["int8"]
    for precision in ("fp32", "int8"):
        (batch,) = int8["in_process"][precision]
        assert batch["batch_size"] == 4 and batch["images_per_s"] > 0
        assert int8["served"][precision]["failures"] == 0 and int8["served"][precision]["images_per_s"] > 0
    agreement = int8["agreement"]
    assert agreement["images"] == 16 and agreement["reference"] == "fp32 model.onnx"
    # The confident head is what makes agreement mean something: far from 1/10, the uniform answer.
    assert agreement["reference_mean_top1"] > 0.5
    assert (out / "int8.png").read_bytes().startswith(b"\x89PNG")
    for row in ("fp32 served grpc, concurrency 2", "int8 served grpc, concurrency 2", "served int8 >= 1.6x"):
        assert row in result.stdout
