"""Capacity from a stepped load test: per-step latency and failure figures from Locust's cumulative
statistics, and the highest step that held the SLO. Plain Python (no locust import, which would
monkey-patch the importing process with gevent), so the arithmetic is testable anywhere."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """Cumulative totals at one instant; two of them bound a measurement window."""

    time_s: float
    requests: int
    failures: int
    response_times: dict[int, int]


@dataclass(frozen=True)
class StepResult:
    users: int
    duration_s: float
    requests: int
    failures: int
    requests_per_s: float
    failure_ratio: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    def holds(self, slo_p95_ms: float, max_failure_ratio: float) -> bool:
        return self.requests > 0 and self.p95_ms <= slo_p95_ms and self.failure_ratio <= max_failure_ratio


def measure_window(users: int, before: Snapshot, after: Snapshot) -> StepResult:
    # Locust keeps response times as a histogram of rounded milliseconds; the window's histogram is the
    # difference of the cumulative ones, so its percentiles cover only this step's requests.
    times = {
        ms: count - before.response_times.get(ms, 0)
        for ms, count in after.response_times.items()
        if count - before.response_times.get(ms, 0) > 0
    }
    timed = sum(times.values())
    requests = after.requests - before.requests
    failures = after.failures - before.failures
    duration = max(after.time_s - before.time_s, 1e-9)

    def percentile(fraction: float) -> float:
        return float(histogram_percentile(times, fraction)) if timed else 0.0

    return StepResult(
        users=users,
        duration_s=round(duration, 3),
        requests=requests,
        failures=failures,
        requests_per_s=requests / duration,
        failure_ratio=failures / requests if requests else 0.0,
        p50_ms=percentile(0.50),
        p95_ms=percentile(0.95),
        p99_ms=percentile(0.99),
    )


def find_capacity(steps: list[StepResult], slo_p95_ms: float, max_failure_ratio: float) -> StepResult | None:
    """The last step of the unbroken run of steps that held, from the first step on."""
    capacity = None
    for step in steps:
        if not step.holds(slo_p95_ms, max_failure_ratio):
            break
        capacity = step
    return capacity


def capacity_line(steps: list[StepResult], slo_p95_ms: float, max_failure_ratio: float) -> str:
    capacity = find_capacity(steps, slo_p95_ms, max_failure_ratio)
    limit = f"p95 <= {slo_p95_ms:g} ms, failures <= {max_failure_ratio:.1%}"
    if capacity is None:
        return f"CAPACITY: none: the first step already broke the SLO ({limit})"
    broken = len(steps) > steps.index(capacity) + 1
    bound = "" if broken else " (at least: the SLO held at every step run)"
    return (
        f"CAPACITY: {capacity.users} users, {capacity.requests_per_s:.2f} req/s at p95 "
        f"{capacity.p95_ms:.0f} ms ({limit}){bound}"
    )


def histogram_percentile(response_times: dict[int, int], fraction: float) -> int:
    """The smallest recorded time with at least `fraction` of the requests at or below it; the same
    answer as locust.stats.calculate_response_time_percentile on the same histogram."""
    total = sum(response_times.values())
    allowed_above = int(total * fraction)
    seen = 0
    for ms in sorted(response_times, reverse=True):
        seen += response_times[ms]
        if total - seen <= allowed_above:
            return ms
    return 0
