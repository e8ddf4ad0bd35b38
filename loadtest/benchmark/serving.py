"""The served `beit` ensemble through the SDK at several concurrencies, with Triton's own per-model
statistics for each point: where a request's time goes (queue, compute input/infer/output) and which
batch sizes the dynamic batcher formed."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from beit_client import BeitClient
from loadtest.benchmark.timing import Call, Measurement, closed_loop

_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class ServedPoint:
    protocol: str
    dynamic_batching: bool
    measurement: Measurement
    statistics: dict[str, dict[str, Any]]


def sweep(
    url: str,
    protocol: str,
    images: Sequence[bytes],
    concurrencies: Sequence[int],
    *,
    dynamic_batching: bool,
    statistics_url: str,
    duration_s: float,
    warmup_s: float,
    top_k: int = 5,
    cpu_clock: Callable[[], float] | None = None,
) -> list[ServedPoint]:
    """One point per concurrency; with the server's CPU clock each point carries its CPU time."""
    points = []
    for concurrency in concurrencies:

        def factory(index: int) -> Call:
            # One client per worker, as separate application instances would hold; no retries, so
            # every failure counts and no response time hides a second attempt.
            client = BeitClient(url, timeout=120.0, max_retries=0)
            # Workers start at different images so concurrent requests carry different sizes.
            cycle = itertools.islice(itertools.cycle(images), index, None)

            def call() -> int:
                client.classify([next(cycle)], top_k=top_k)
                return 1

            return call

        # The snapshots bracket the whole point, warm-up included: the statistics describe where a
        # request's time goes (means per request, batch sizes), not the measured window's throughput.
        before = inference_statistics(statistics_url)
        measurement = closed_loop(
            factory,
            concurrency=concurrency,
            duration_s=duration_s,
            warmup_s=warmup_s,
            cpu_clock=cpu_clock,
        )
        statistics = statistics_delta(before, inference_statistics(statistics_url))
        points.append(ServedPoint(protocol, dynamic_batching, measurement, statistics))
    return points


def inference_statistics(http_url: str) -> dict[str, dict[str, Any]]:
    """Triton's cumulative statistics API, per model name."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url.split("://", 1)[-1])
    try:
        answer = client.get_inference_statistics()
    finally:
        client.close()
    return {stats["name"]: stats for stats in answer.get("model_stats", [])}


def statistics_delta(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per model, what happened between the two snapshots: request and execution counts, mean batch
    size, mean ms per request in each phase, and executions per batch size."""
    delta: dict[str, dict[str, Any]] = {}
    for name, now in after.items():
        then = before.get(name, {})
        requests = _count(now, then, "success")
        if requests == 0:
            continue
        executions = int(now.get("execution_count", 0)) - int(then.get("execution_count", 0))
        inferences = int(now.get("inference_count", 0)) - int(then.get("inference_count", 0))
        per_request = {f"{phase}_ms": _nanoseconds(now, then, phase) / requests / 1e6 for phase in _PHASES}
        then_batches = {b["batch_size"]: b for b in then.get("batch_stats", [])}
        batches = {}
        for batch in now.get("batch_stats", []):
            old = then_batches.get(batch["batch_size"], {}).get("compute_infer", {})
            count = int(batch["compute_infer"]["count"]) - int(old.get("count", 0))
            if count:
                batches[str(batch["batch_size"])] = count
        delta[name] = {
            "requests": requests,
            "executions": executions,
            "inferences": inferences,
            "mean_batch_size": inferences / executions if executions else None,
            "request_ms": _nanoseconds(now, then, "success") / requests / 1e6,
            **per_request,
            "executions_by_batch_size": batches,
        }
    return delta


def _count(now: dict[str, Any], then: dict[str, Any], phase: str) -> int:
    new = int(now.get("inference_stats", {}).get(phase, {}).get("count", 0))
    return new - int(then.get("inference_stats", {}).get(phase, {}).get("count", 0))


def _nanoseconds(now: dict[str, Any], then: dict[str, Any], phase: str) -> int:
    new = int(now.get("inference_stats", {}).get(phase, {}).get("ns", 0))
    return new - int(then.get("inference_stats", {}).get(phase, {}).get("ns", 0))
