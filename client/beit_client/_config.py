"""Client settings: the server URL (parsed once), retry policy and TLS options."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._constants import DEFAULT_MAX_RETRIES, INITIAL_RETRY_DELAY, MAX_RETRY_DELAY
from ._types import Protocol

__all__ = ["RetryPolicy", "ServerURL", "TLSConfig"]

_SCHEMES: dict[str, tuple[Protocol, bool]] = {
    "http": ("http", False),
    "https": ("http", True),
    "grpc": ("grpc", False),
    "grpcs": ("grpc", True),
}
_DEFAULT_PORTS = {"http": 8000, "grpc": 8001}


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
