"""The embedded Triton server a benchmark measures, started on free ports for one block."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from beit_repository.names import EMBEDDED_VARIANT

logger = logging.getLogger("loadtest.benchmark")


@dataclass(frozen=True)
class Server:
    """Where a measured server answers, and its CPU clock when it runs on this machine."""

    urls: dict[str, str]
    cpu_seconds: Callable[[], float] | None = None


@contextlib.contextmanager
def embedded_server(repository: Path, variant: str = EMBEDDED_VARIANT) -> Iterator[Server]:
    """beit-serve's Triton on `repository`, loading each model's configs/`variant`.pbtxt."""
    from beit_serve import EmbeddedServer

    http_port, grpc_port, metrics_port = free_ports(3)
    # Triton's log would drown the table; it goes next to the repository it served.
    log_file = repository.with_name(f"triton-{repository.name}-{variant}.log")
    log_file.unlink(missing_ok=True)
    logger.info("starting the embedded server on %s, variant %s (log: %s)", repository, variant, log_file)
    with EmbeddedServer(
        repository,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        model_config_name=variant,
        log_file=log_file,
    ) as server:
        yield Server({"http": server.http_url, "grpc": server.grpc_url}, server.cpu_seconds)


def free_ports(count: int) -> list[int]:
    # Bound together so the kernel hands out distinct ports; released just before the server binds them.
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
