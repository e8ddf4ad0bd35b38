"""Client settings: the server URL (parsed once), retry policy, TLS options and the options of a request."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, fields, replace
from typing import Any, TypedDict
from urllib.parse import urlsplit

from ._constants import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_RETRIES,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_DELAY,
    TRITON_METRICS_PORT,
)
from ._types import Headers, ImageEncoding, PreprocessMode, Protocol

__all__ = ["RequestOptionFields", "RequestOptions", "RetryPolicy", "ServerURL", "TLSConfig"]

_SCHEMES: dict[str, tuple[Protocol, bool]] = {
    "http": ("http", False),
    "https": ("http", True),
    "grpc": ("grpc", False),
    "grpcs": ("grpc", True),
}
_DEFAULT_PORTS: dict[Protocol, int] = {"http": DEFAULT_HTTP_PORT, "grpc": DEFAULT_GRPC_PORT}
_PROTOCOL_NAMES: dict[Protocol, str] = {"http": "HTTP", "grpc": "gRPC"}


@dataclass(frozen=True)
class ServerURL:
    """`http://host:8000`, `https://…`, `grpc://host:8001` or `grpcs://…`; the scheme picks the protocol."""

    protocol: Protocol
    tls: bool
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> ServerURL:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"unsupported URL scheme in {url!r}: use one of {', '.join(_SCHEMES)}")
        if not parts.hostname:
            raise ValueError(f"no host in {url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"a server URL is scheme://host[:port] only, got {url!r}")
        protocol, tls = _SCHEMES[parts.scheme]
        return cls(protocol, tls, parts.hostname, parts.port or _DEFAULT_PORTS[protocol])

    @property
    def authority(self) -> str:
        """`host:port` as tritonclient takes it (it refuses a scheme)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        scheme = self.protocol + ("s" if self.tls else "")
        return f"{scheme}://{self.authority}"

    @property
    def protocol_name(self) -> str:
        """ "HTTP" or "gRPC", for messages."""
        return _PROTOCOL_NAMES[self.protocol]

    def fix_hint(self, *, answered: bool) -> str:
        """What to check when nothing at this URL answered as a Triton server of its protocol (`answered`:
        something did, but not in that protocol). Where the port is Triton's default for something else, the
        URL that default calls for: "port 8001 is Triton's gRPC port: use grpc://localhost:8001"."""
        if self.port == TRITON_METRICS_PORT:
            own_port = replace(self, port=_DEFAULT_PORTS[self.protocol])
            return f"port {self.port} is Triton's metrics port: use {own_port}"
        for protocol, port in _DEFAULT_PORTS.items():
            if protocol != self.protocol and self.port == port:
                name = _PROTOCOL_NAMES[protocol]
                return f"port {port} is Triton's {name} port: use {replace(self, protocol=protocol)}"
        if answered:
            return (
                f"is port {self.port} the server's {self.protocol_name} port? (Triton's defaults: "
                f"HTTP {DEFAULT_HTTP_PORT}, gRPC {DEFAULT_GRPC_PORT}, metrics {TRITON_METRICS_PORT})"
            )
        return f"is the server running, with its {self.protocol_name} port at {self.port}?"


@dataclass(frozen=True)
class RetryPolicy:
    """Transient errors are retried `max_retries` times, waiting `initial_delay * 2**attempt` seconds capped
    at `max_delay`, minus jitter."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ValueError(f"invalid retry policy: {self}")


@dataclass(frozen=True)
class TLSConfig:
    """TLS for `https://` and `grpcs://`. Certificate arguments are PEM file paths; `ssl_context` (https only)
    replaces them for callers who build their own."""

    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None
    ssl_context: ssl.SSLContext | None = None

    def build_ssl_context(self) -> ssl.SSLContext:
        if self.ssl_context is not None:
            return self.ssl_context
        context = ssl.create_default_context(cafile=self.root_certificates)
        if self.certificate_chain is not None:
            context.load_cert_chain(self.certificate_chain, self.private_key)
        return context


@dataclass(frozen=True)
class RequestOptions:
    """How requests are sent. Every field is optional: None inherits, from the client a copy was made from
    (`client.with_options(...)`) and in the end from the defaults in `_constants`.

    `max_retries`, when set, replaces the count of `retry` (whose delays still apply)."""

    timeout: float | None = None
    """Seconds for one request, connecting included."""
    headers: Headers | None = None
    """HTTP headers or gRPC metadata; merged key by key over the inherited ones."""
    max_retries: int | None = None
    retry: RetryPolicy | None = None
    preprocess: PreprocessMode | None = None
    """"server": send encoded images to the ensemble; "client": compute the pixels here, send them to the
    network."""
    encoding: ImageEncoding | None = None
    """How in-memory images (PIL, numpy) are encoded: "png" (lossless) or "jpeg"."""
    jpeg_quality: int | None = None

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout}")
        if self.max_retries is not None and self.max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {self.max_retries}")
        if self.preprocess not in (None, "server", "client"):
            raise ValueError(f"preprocess must be 'server' or 'client', not {self.preprocess!r}")
        if self.encoding not in (None, "png", "jpeg"):
            raise ValueError(f"encoding must be 'png' or 'jpeg', not {self.encoding!r}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be within 1..100, not {self.jpeg_quality}")
        if self.headers is not None:
            # A copy of its own: the caller's dict may change after this.
            object.__setattr__(self, "headers", dict(self.headers))

    def merge(self, override: RequestOptions) -> RequestOptions:
        """These options with `override`'s set fields on top; headers merged key by key."""
        changes: dict[str, Any] = {}
        for option in fields(override):
            value = getattr(override, option.name)
            if value is not None:
                changes[option.name] = value
        if self.headers is not None and override.headers is not None:
            changes["headers"] = {**self.headers, **override.headers}
        return replace(self, **changes)


class RequestOptionFields(TypedDict, total=False):
    """`RequestOptions`' fields as keyword arguments (of the clients' constructors and `with_options`)."""

    timeout: float | None
    headers: Headers | None
    max_retries: int | None
    retry: RetryPolicy | None
    preprocess: PreprocessMode | None
    encoding: ImageEncoding | None
    jpeg_quality: int | None
