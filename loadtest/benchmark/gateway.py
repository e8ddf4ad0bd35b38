"""python -m loadtest.benchmark.gateway --model random-base --out results/gateway-benchmark

What beit-gateway costs over calling Triton's gRPC port directly, both measured in one run on one machine
against the same embedded Triton, with the same images, one image per request:

- Latency at concurrency 1. One loop alternates the two paths call by call (gateway, direct, gateway, ...),
  so drift over the run (other load on the machine, clock changes) reaches both alike. Overhead is the
  gateway's p50 minus direct's p50 (the target), and also the median of the paired differences (each gateway
  call minus the direct call after it), which is steadier when the model's own time varies.
- Throughput at saturation (closed loops at --saturation-concurrency workers). Four windows in the order
  direct, gateway, gateway, direct (ABBA: a linear drift cancels); each path's img/s is over its two windows.

The direct path is the SDK's gRPC client (`BeitClient`), as `loadtest.benchmark.serving` measures it; the
gateway path is an HTTP client (httpx) sending the image file as the body of POST /models/beit (`--form`).
Both are one client per worker. Targets: p50 overhead <= 3 ms, throughput >= 0.95x direct.

Prints a table ending in PASS/FAIL lines and writes OUT/gateway-benchmark.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from beit_client import BeitClient
from loadtest.benchmark import report
from loadtest.benchmark.artifacts import prepare
from loadtest.benchmark.timing import Call, Measurement, closed_loop, summarize
from loadtest.corpus import synthetic_corpus
from loadtest.gateway import GATEWAY_FORMS, GatewayForm, classify_via_gateway

logger = logging.getLogger("loadtest.benchmark.gateway")

MAX_P50_OVERHEAD_MS = 3.0
MIN_THROUGHPUT_RATIO = 0.95


@dataclass(frozen=True)
class Endpoints:
    grpc_url: str
    gateway_url: str
    gateway_cpu_seconds: Callable[[], float] | None = None


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.benchmark.gateway", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument(
        "--model", default="random-base", help="random-SIZE (beit-build --random sizes), or a checkpoint"
    )
    parser.add_argument("--out", type=Path, default=Path("results/gateway-benchmark"))
    parser.add_argument("--triton-url", default="", help="measure this running Triton (gRPC URL)...")
    parser.add_argument("--gateway-url", default="", help="...and this running beit-gateway in front of it")
    parser.add_argument("--form", choices=GATEWAY_FORMS, default="hf-raw", help="what the gateway is sent")
    parser.add_argument("--duration-s", type=float, default=30.0, help="measured seconds per window")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--saturation-concurrency", type=int, default=8)
    parser.add_argument("--corpus-size", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=5)
    return parser.parse_args(argv)


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/ready", timeout=5) as response:
                if response.status == 200:
                    return
        time.sleep(0.5)
    raise TimeoutError(f"{url}/ready did not answer 200 in {timeout_s:.0f} s")


@contextlib.contextmanager
def started_servers(repository: Path, log_dir: Path) -> Iterator[Endpoints]:
    """The embedded Triton on `repository` and beit-gateway in front of its gRPC port, on free ports."""
    from beit_serve import EmbeddedServer
    from beit_serve.processes import cpu_seconds
    from loadtest.benchmark.servers import free_ports

    http_port, grpc_port, metrics_port, gateway_port = free_ports(4)
    log_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedServer(
        repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        log_file=log_dir / "triton.log",
    ) as triton:
        gateway_bin = Path(sys.executable).with_name("beit-gateway")
        command = [str(gateway_bin), "--triton-url", triton.grpc_url, "--host", "127.0.0.1"]
        with open(log_dir / "gateway.log", "wb") as log:
            gateway = subprocess.Popen([*command, "--port", str(gateway_port)], stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{gateway_port}"
            wait_ready(url)
            yield Endpoints(triton.grpc_url, url, lambda: cpu_seconds(gateway.pid))
        finally:
            gateway.terminate()
            gateway.wait(timeout=60)


def direct_call(url: str, images: Sequence[bytes], index: int, top_k: int) -> Call:
    client = BeitClient(url, timeout=120.0, max_retries=0)
    cycle = itertools.islice(itertools.cycle(images), index, None)

    def call() -> int:
        client.classify([next(cycle)], top_k=top_k)
        return 1

    return call


def gateway_call(url: str, form: GatewayForm, images: Sequence[bytes], index: int, top_k: int) -> Call:
    client = httpx.Client(base_url=url, timeout=120.0)
    cycle = itertools.islice(itertools.cycle(images), index, None)

    def call() -> int:
        classify_via_gateway(client, form, next(cycle), top_k)
        return 1

    return call


def alternating(
    direct: Call, gateway: Call, *, duration_s: float, warmup_s: float
) -> tuple[Measurement, Measurement, list[float]]:
    """Concurrency 1, the two paths call by call: each path's measurement, and gateway - direct per pair."""
    deadline = time.perf_counter() + warmup_s
    while time.perf_counter() < deadline:
        gateway()
        direct()
    latencies: dict[str, list[float]] = {"direct": [], "gateway": []}
    pairs = []
    started = time.perf_counter()
    while time.perf_counter() - started < duration_s:
        for name, call in (("gateway", gateway), ("direct", direct)):
            begin = time.perf_counter()
            call()
            latencies[name].append(time.perf_counter() - begin)
        pairs.append((latencies["gateway"][-1] - latencies["direct"][-1]) * 1000)
    elapsed = time.perf_counter() - started
    measurements = [
        summarize(latencies[name], images=len(latencies[name]), failures=0, duration_s=elapsed, concurrency=1,
                  batch_size=1)
        for name in ("direct", "gateway")
    ]  # fmt: skip
    return measurements[0], measurements[1], pairs


def run(args: argparse.Namespace, endpoints: Endpoints, images: Sequence[bytes]) -> dict[str, Any]:
    timing = {"duration_s": args.duration_s, "warmup_s": args.warmup_s}
    form: GatewayForm = args.form

    logger.info("concurrency 1: gateway and direct gRPC, call by call, %.0f s", args.duration_s)
    direct_1, gateway_1, pairs = alternating(
        direct_call(endpoints.grpc_url, images, 0, args.top_k),
        gateway_call(endpoints.gateway_url, form, images, 0, args.top_k),
        **timing,
    )

    concurrency = args.saturation_concurrency
    windows: dict[str, list[Measurement]] = {"direct": [], "gateway": []}
    cpu: list[float] = []
    for name in ("direct", "gateway", "gateway", "direct"):
        logger.info("saturation: %s at concurrency %d, %.0f s", name, concurrency, args.duration_s)

        def factory(index: int, name: str = name) -> Call:
            if name == "direct":
                return direct_call(endpoints.grpc_url, images, index, args.top_k)
            return gateway_call(endpoints.gateway_url, form, images, index, args.top_k)

        cpu_before = endpoints.gateway_cpu_seconds() if endpoints.gateway_cpu_seconds else None
        windows[name].append(closed_loop(factory, concurrency=concurrency, **timing))
        if cpu_before is not None and endpoints.gateway_cpu_seconds is not None and name == "gateway":
            cpu.append(endpoints.gateway_cpu_seconds() - cpu_before)

    def combined(measurements: list[Measurement]) -> dict[str, Any]:
        images_done = sum(m.images for m in measurements)
        seconds = sum(m.duration_s for m in measurements)
        return {
            "images_per_s": images_done / seconds,
            "failures": sum(m.failures for m in measurements),
            "windows": [asdict(m) for m in measurements],
        }

    saturation = {name: combined(measured) for name, measured in windows.items()}
    gateway_requests = sum(m.calls for m in windows["gateway"])
    return {
        "concurrency_1": {
            "direct": asdict(direct_1),
            "gateway": asdict(gateway_1),
            "p50_overhead_ms": gateway_1.p50_ms - direct_1.p50_ms,
            "paired_overhead_ms": {
                "median": float(np.median(pairs)),
                "p25": float(np.percentile(pairs, 25)),
                "p75": float(np.percentile(pairs, 75)),
                "pairs": len(pairs),
            },
        },
        "saturation": {
            "concurrency": concurrency,
            **saturation,
            "throughput_ratio": saturation["gateway"]["images_per_s"] / saturation["direct"]["images_per_s"],
            # Whole windows, warm-up included: what the gateway process spends per request it answers.
            "gateway_cpu_ms_per_request": (sum(cpu) * 1000 / gateway_requests)
            if cpu and gateway_requests
            else None,
        },
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    one, saturated = results["concurrency_1"], results["saturation"]
    overhead = one["p50_overhead_ms"]
    ratio = saturated["throughput_ratio"]
    return [
        {
            "name": f"p50 overhead at concurrency 1 <= {MAX_P50_OVERHEAD_MS:g} ms",
            "passed": overhead <= MAX_P50_OVERHEAD_MS,
            "detail": f"{one['gateway']['p50_ms']:.1f} - {one['direct']['p50_ms']:.1f} = {overhead:.2f} ms "
            f"(median of paired differences {one['paired_overhead_ms']['median']:.2f} ms)",
        },
        {
            "name": f"throughput at saturation >= {MIN_THROUGHPUT_RATIO:g}x direct gRPC",
            "passed": ratio >= MIN_THROUGHPUT_RATIO and saturated["gateway"]["failures"] == 0,
            "detail": f"{saturated['gateway']['images_per_s']:.2f} vs "
            f"{saturated['direct']['images_per_s']:.2f} img/s = {ratio:.3f}x "
            f"(concurrency {saturated['concurrency']})",
        },
    ]


def table(results: dict[str, Any]) -> str:
    environment = results["environment"]
    lines = [
        f"beit-gateway vs direct gRPC: {environment['model']} on {environment['cores']} cores, "
        f"{environment['duration_s']:g} s per window, gateway form {environment['form']}",
        "",
        f"{'what':<44}{'img/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'fail':>6}",
    ]

    def row(label: str, m: dict[str, Any]) -> None:
        lines.append(
            f"{label:<44}{m['images_per_s']:>8.2f}{m['p50_ms']:>9.1f}{m['p95_ms']:>9.1f}{m['p99_ms']:>9.1f}"
            f"{m['failures']:>6}"
        )

    one, saturated = results["concurrency_1"], results["saturation"]
    lines.append("-- concurrency 1, alternating call by call")
    row("direct gRPC (SDK)", one["direct"])
    row("gateway (HTTP -> gRPC)", one["gateway"])
    paired = one["paired_overhead_ms"]
    lines.append(
        f"{'gateway - direct, paired calls (ms)':<44}median {paired['median']:.2f}, "
        f"p25 {paired['p25']:.2f}, p75 {paired['p75']:.2f} over {paired['pairs']} pairs"
    )
    lines.append(
        f"-- saturation, concurrency {saturated['concurrency']}, windows direct/gateway/gateway/direct"
    )
    for name in ("direct", "gateway"):
        for number, window in enumerate(saturated[name]["windows"], 1):
            row(f"{name} window {number}", window)
    for name in ("direct", "gateway"):
        lines.append(f"{name + ' overall (img/s)':<44}{saturated[name]['images_per_s']:>8.2f}")
    cpu = saturated["gateway_cpu_ms_per_request"]
    if cpu is not None:
        lines.append(f"{'gateway process CPU per request (ms)':<44}{cpu:>8.2f}")
    lines.append("-- targets")
    lines.extend(
        f"{'PASS' if t['passed'] else 'FAIL'}  {t['name']}: {t['detail']}" for t in results["targets"]
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    images = synthetic_corpus(args.corpus_size)
    environment = report.environment(
        args.model, form=args.form, duration_s=args.duration_s, warmup_s=args.warmup_s, urls=None
    )
    if args.triton_url and args.gateway_url:
        environment["urls"] = {"triton": args.triton_url, "gateway": args.gateway_url}
        results = run(args, Endpoints(args.triton_url, args.gateway_url), images)
    else:
        artifacts = prepare(args.model, args.out / "artifacts")
        with started_servers(artifacts.repository, args.out / "logs") as endpoints:
            results = run(args, endpoints, images)
    results = {"environment": environment, **results}
    results["targets"] = targets(results)
    (args.out / "gateway-benchmark.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"\nwrote {args.out / 'gateway-benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
