"""The gateway's load tests against the embedded server: the Locust user class, and the gateway-vs-direct
benchmark script (briefly: its figures are measured by running it, not here)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.benchmark.gateway import table, targets
from tests.gateway import ROOT, GatewayProcess, running_gateway

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("loadtest-gateway") / "gateway.log"
    with running_gateway("--triton-url", triton_server.grpc_url, log=log) as running:
        yield running


def locust(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "locust", "--headless", "--corpus-size", "8", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def stats(prefix: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as f:
        return {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}


@pytest.mark.parametrize("form", ["hf-raw", "hf-json", "azure"])
def test_the_gateway_user_classifies_through_each_form_without_failures(gateway, form: str, tmp_path: Path):
    prefix = tmp_path / "run"
    result = locust(
        "-f", "loadtest/locustfile.py", "-u", "2", "-r", "2", "-t", "5s", "--host", gateway.url,
        "--gateway-form", form, "--csv", str(prefix), "GatewayBeitUser",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = stats(prefix)
    assert int(rows[("gateway", "classify")]["Request Count"]) > 0
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0
    assert float(rows[("gateway", "classify")]["Average Content Size"]) > 0


def test_a_gateway_answering_errors_counts_as_failures(triton_server, tmp_path: Path):
    prefix = tmp_path / "run"
    with running_gateway(
        "--triton-url", triton_server.grpc_url, "--api-key", "k", log=tmp_path / "g.log"
    ) as keyed:
        result = locust(
            "-f", "loadtest/locustfile.py", "-u", "1", "-r", "1", "-t", "3s", "--host", keyed.url,
            "--csv", str(prefix), "GatewayBeitUser",
        )  # fmt: skip
    rows = stats(prefix)
    requests = int(rows[("gateway", "classify")]["Request Count"])
    assert requests > 0 and int(rows[("gateway", "classify")]["Failure Count"]) == requests
    with open(f"{prefix}_failures.csv", newline="") as f:
        assert "HTTP 401" in f.read()
    assert result.returncode == 1


def test_a_run_naming_no_user_class_keeps_to_triton(triton_server, tmp_path: Path):
    prefix = tmp_path / "run"
    result = locust(
        "-f", "loadtest/locustfile.py", "-u", "2", "-r", "2", "-t", "4s", "--host", triton_server.http_url,
        "--csv", str(prefix),
    )  # fmt: skip
    # (Its gRPC users go to port 8001 of --host, where nothing may listen: their outcome is not the point.)
    assert "HttpBeitUser" in result.stderr and "GatewayBeitUser" not in result.stderr
    types = {kind for kind, name in stats(prefix) if name == "classify"}
    assert types == {"http", "grpc"}


def test_the_gateway_benchmark_compares_both_paths_in_one_run(triton_server, gateway, tmp_path: Path):
    out = tmp_path / "results"
    result = subprocess.run(
        [
            sys.executable, "-m", "loadtest.benchmark.gateway", "--out", str(out),
            "--triton-url", triton_server.grpc_url, "--gateway-url", gateway.url,
            "--duration-s", "1", "--warmup-s", "0.2", "--saturation-concurrency", "2", "--corpus-size", "4",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "gateway-benchmark.json").read_text())
    one, saturated = results["concurrency_1"], results["saturation"]
    assert one["direct"]["calls"] > 0 and one["gateway"]["calls"] > 0
    assert one["p50_overhead_ms"] == pytest.approx(one["gateway"]["p50_ms"] - one["direct"]["p50_ms"])
    assert one["paired_overhead_ms"]["pairs"] == one["gateway"]["calls"]
    assert [len(saturated[name]["windows"]) for name in ("direct", "gateway")] == [2, 2]
    assert saturated["direct"]["failures"] == saturated["gateway"]["failures"] == 0
    assert saturated["throughput_ratio"] == pytest.approx(
        saturated["gateway"]["images_per_s"] / saturated["direct"]["images_per_s"]
    )
    assert [t["name"] for t in results["targets"]] == [
        "p50 overhead at concurrency 1 <= 3 ms",
        "throughput at saturation >= 0.95x direct gRPC",
    ]
    assert "-- targets" in result.stdout and ("PASS" in result.stdout or "FAIL" in result.stdout)


def test_the_benchmark_targets_pass_and_fail_on_their_thresholds() -> None:
    def results(gateway_p50: float, ratio: float) -> dict[str, Any]:
        point = {"images_per_s": 1.0, "p50_ms": 100.0, "p95_ms": 1.0, "p99_ms": 1.0, "failures": 0}
        return {
            "environment": {"model": "m", "cores": 2, "duration_s": 1, "form": "hf-raw"},
            "concurrency_1": {
                "direct": point,
                "gateway": {**point, "p50_ms": gateway_p50},
                "p50_overhead_ms": gateway_p50 - 100.0,
                "paired_overhead_ms": {"median": 1.0, "p25": 0.5, "p75": 2.0, "pairs": 10},
            },
            "saturation": {
                "concurrency": 8,
                "direct": {"images_per_s": 10.0, "failures": 0, "windows": []},
                "gateway": {"images_per_s": 10.0 * ratio, "failures": 0, "windows": []},
                "throughput_ratio": ratio,
                "gateway_cpu_ms_per_request": 1.5,
            },
        }

    assert [t["passed"] for t in targets(results(103.0, 0.95))] == [True, True]
    assert [t["passed"] for t in targets(results(103.1, 0.949))] == [False, False]
    passing = results(101.0, 1.0)
    passing["targets"] = targets(passing)
    assert "PASS  p50 overhead at concurrency 1 <= 3 ms: 101.0 - 100.0 = 1.00 ms" in table(passing)
