"""One server address given for one protocol, turned into the other's: Triton serves HTTP and gRPC on two
ports of the same host."""

from __future__ import annotations

from urllib.parse import urlsplit

# Triton's default ports.
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}


def url_for_protocol(url: str, protocol: str) -> str:
    """`url` if it already is a `protocol` URL (https counts as http); otherwise the same host name on
    `protocol`'s default port. A bare HOST:PORT is taken as `protocol`'s."""
    if "://" not in url:
        return f"{protocol}://{url}"
    parts = urlsplit(url)
    if parts.scheme == protocol or (protocol == "http" and parts.scheme == "https"):
        return url
    return f"{protocol}://{parts.hostname}:{DEFAULT_PORTS[protocol]}"
