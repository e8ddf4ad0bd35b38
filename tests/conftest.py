from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from beit_repository import model_config
from beit_repository.names import EMBEDDED_VARIANT, PREPROCESS_MODEL, VARIANTS_DIRECTORY
from tests.checkpoints import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def pip_without_bytecode() -> Iterator[None]:
    """The tests' throwaway venvs install without compiling bytecode, which is 45 of the 70 s torch,
    transformers and onnxruntime take to install here, for environments that run a few commands once. pip
    reads PIP_NO_COMPILE as the value of its store-false --no-compile option: "0" turns compilation off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PIP_NO_COMPILE", "0")
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_mentioning(text: str) -> list[str]:
    """The command lines of this machine's processes (other than this one) that contain `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in command:
                found.append(command)
    return found


@dataclass(frozen=True)
class ServeProcess:
    process: subprocess.Popen[bytes]
    http_url: str
    grpc_url: str


def start_beit_serve(*command: str | Path, cwd: Path | None = None) -> ServeProcess:
    """`command` (beit-serve, or python -m beit_serve, with its own options) started on free ports and
    waited for until ready; the caller stops it."""
    http_port, grpc_port = free_port(), free_port()
    ports = ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(free_port())]
    process = subprocess.Popen([str(part) for part in [*command, *ports]], cwd=cwd)
    served = ServeProcess(process, f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}")
    try:
        wait_ready(served.http_url, process)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return served


def run_probe(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`beit-serve probe` against `url`, as a container health check runs it."""
    return subprocess.run(
        [sys.executable, "-m", "beit_serve", "probe", "--url", url, "--timeout", "10", *extra],
        capture_output=True,
        text=True,
    )


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Until the server behind `url` reports ready; fails if `process` (which serves it) exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited before it was ready"
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} was not ready in time")


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout as the wheel a user installs (tests/test_wheel_install.py, tests/test_images.py)."""
    import sys

    directory = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(directory), ROOT]
    subprocess.run([str(part) for part in command], check=True, cwd=directory)
    (built,) = directory.glob("beit_triton-*.whl")
    return built


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-beit"))


@pytest.fixture(scope="session")
def tiny_repository(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from beit_build import build_repository

    repository = tmp_path_factory.mktemp("tiny-repository")
    build_repository(tiny_checkpoint, repository)
    widen_batching_window(repository / PREPROCESS_MODEL / VARIANTS_DIRECTORY / f"{EMBEDDED_VARIANT}.pbtxt")
    return repository


@pytest.fixture(scope="session")
def tiny_external_repository(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny repository with its weights in an external data file beside model.onnx, as every model above
    protobuf's 2 GiB is built (`beit-build --external-data` forces it at any size)."""
    from beit_build import build_repository

    repository = tmp_path_factory.mktemp("tiny-external-repository")
    build_repository(tiny_checkpoint, repository, external_data=True)
    return repository


@pytest.fixture(scope="session")
def tiny_384_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint at its own resolution, not BEiT's usual 224: sizes must follow it everywhere."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-384"), image_size=384, num_labels=5)


@pytest.fixture(scope="session")
def tiny_384_repository(tiny_384_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from beit_build import build_repository

    repository = tmp_path_factory.mktemp("tiny-384-repository")
    build_repository(tiny_384_checkpoint, repository)
    return repository


def widen_batching_window(path: Path) -> None:
    """Concurrent test requests then share one preprocessor batch deterministically, not by luck."""
    config = model_config.read(path)
    assert config.HasField("dynamic_batching"), f"{path} has no dynamic batcher"
    config.dynamic_batching.max_queue_delay_microseconds = 100_000
    model_config.write(path, config)


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
