"""The wire between the SDK and Triton: one interface (`base`), tritonclient-backed HTTP and gRPC
implementations, and an in-memory fake for tests (`mock`)."""

from __future__ import annotations

from .._config import ServerURL, TLSConfig
from .base import AsyncTransport, InferRequest, RequestedOutput, Transport
from .mock import AsyncMockTransport, MockTransport

__all__ = [
    "AsyncMockTransport",
    "AsyncTransport",
    "InferRequest",
    "MockTransport",
    "RequestedOutput",
    "Transport",
    "create_async_transport",
    "create_transport",
]


def create_transport(url: ServerURL, *, timeout: float, tls: TLSConfig | None) -> Transport:
    if url.protocol == "grpc":
        from .grpc import GRPCTransport

        return GRPCTransport(url, timeout=timeout, tls=tls)
    from .http import HTTPTransport

    return HTTPTransport(url, timeout=timeout, tls=tls)


def create_async_transport(
    url: ServerURL, *, timeout: float, tls: TLSConfig | None, concurrency: int
) -> AsyncTransport:
    if url.protocol == "grpc":
        from .grpc import AsyncGRPCTransport

        return AsyncGRPCTransport(url, timeout=timeout, tls=tls)
    from .http import AsyncHTTPTransport

    return AsyncHTTPTransport(url, timeout=timeout, tls=tls, concurrency=concurrency)
