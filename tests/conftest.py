from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.checkpoints import save_tiny_checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-beit"))


@pytest.fixture(scope="session")
def tiny_repository(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from beit_build import build_repository

    repository = tmp_path_factory.mktemp("tiny-repository")
    build_repository(tiny_checkpoint, repository)
    widen_batching_window(repository / "beit_preprocess" / "configs" / "embedded.pbtxt")
    return repository


def widen_batching_window(config: Path) -> None:
    """Concurrent test requests then share one preprocessor batch deterministically, not by luck."""
    text = config.read_text()
    widened = text.replace("max_queue_delay_microseconds: 0\n", "max_queue_delay_microseconds: 100000\n")
    assert widened != text, f"no batching window to widen in {config}"
    config.write_text(widened)


@pytest.fixture(scope="session")
def triton_server(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real embedded Triton server on the tiny repository, shared by every live test."""
    from beit_serve import EmbeddedServer

    log_file = tmp_path_factory.mktemp("triton-log") / "triton.log"
    server = EmbeddedServer(
        tiny_repository,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_file=log_file,
    )
    with server:
        yield server
