"""The gateway's Prometheus metrics, in a registry of each app's own (several apps in one process, as in
tests, do not collide), served at GET /metrics.

    beit_gateway_requests_total{endpoint, method, status}       every answered request
    beit_gateway_request_duration_seconds{endpoint}             latency histogram, request in to answer out
    beit_gateway_errors_total{endpoint, status, code}           answers >= 400, by status and error code
    beit_gateway_images_total{endpoint, outcome}                images classified / refused
    beit_gateway_url_fetches_total{outcome}                     image URLs fetched / refused / failed
    beit_gateway_triton_duration_seconds                        time one request waited on Triton
    beit_gateway_requests_in_flight                             requests being answered now

`endpoint` is the route's template ("/models/{model}"), or "other" for paths the gateway does not serve, so
the number of series stays bounded whatever paths callers try.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ENDPOINTS", "Metrics", "endpoint_of"]

ENDPOINTS = ("/health", "/ready", "/metrics", "/docs", "/openapi.json", "/score")
_MODELS_PREFIX = "/models/"
# From a fast GPU answer to a slow CPU one.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def endpoint_of(path: str) -> str:
    if path in ENDPOINTS:
        return path
    if path.startswith(_MODELS_PREFIX) and "/" not in path[len(_MODELS_PREFIX) :]:
        return "/models/{model}"
    return "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "beit_gateway_requests",
            "HTTP requests answered, by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "beit_gateway_request_duration_seconds",
            "Seconds from a request's arrival to its answer",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "beit_gateway_errors",
            "Error answers (status >= 400), by endpoint, status and error code",
            ["endpoint", "status", "code"],
            registry=self.registry,
        )
        self.images = Counter(
            "beit_gateway_images",
            "Images in classification requests, by outcome (classified, refused)",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.url_fetches = Counter(
            "beit_gateway_url_fetches",
            "Image URLs, by outcome (fetched, refused by the URL policy, failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.triton_latency = Histogram(
            "beit_gateway_triton_duration_seconds",
            "Seconds one request waited on Triton (all its images)",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "beit_gateway_requests_in_flight", "Requests being answered now", registry=self.registry
        )

    def observe(
        self, endpoint: str, method: str, status: int, seconds: float, error_code: str | None
    ) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, str(status), error_code or "").inc()
