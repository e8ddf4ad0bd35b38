"""beit-serve as a user runs it: a process that serves until a signal, then leaves nothing behind."""

from __future__ import annotations

import http.server
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from beit_repository.template import template_directory
from beit_serve.server import SHM_PREFIX, EmbeddedServer, shm_regions
from tests.conftest import free_port, processes_mentioning, start_beit_serve

pytestmark = pytest.mark.server


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_beit_serve_shuts_down_cleanly_on_a_signal_leaving_no_stub_processes(
    tiny_repository, tmp_path, stop_signal
):
    # A copy of its own, so the stubs of the session's shared server do not count.
    repository = shutil.copytree(tiny_repository, tmp_path / "repository")
    process = start_beit_serve(sys.executable, "-m", "beit_serve", "--repository", repository).process
    try:
        assert processes_mentioning(str(repository)), "no Python-backend stub is running"
        process.send_signal(stop_signal)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert processes_mentioning(str(repository)) == []


def beit_serve(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """beit-serve run to its end, as a user at a terminal sees it."""
    command = [sys.executable, "-m", "beit_serve", *(str(arg) for arg in args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def ports(http: int | None = None) -> list[str]:
    return [
        "--http-port",
        str(http or free_port()),
        "--grpc-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
    ]


@pytest.fixture
def ready_lookalike() -> Iterator[int]:
    """Another server on a port, answering 200 to everything: Triton's health route included."""

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_held_by_another_server_stops_beit_serve_at_once_with_one_line(
    tiny_repository: Path, ready_lookalike: int
) -> None:
    started = time.monotonic()
    result = beit_serve("--repository", tiny_repository, *ports(http=ready_lookalike))
    assert result.returncode == 1 and time.monotonic() - started < 15
    (line,) = result.stderr.splitlines()
    assert line == (
        f"beit-serve: error: port {ready_lookalike} on 0.0.0.0 is in use (Address already in use): another "
        "server is running there; stop it, or choose another port with --http-port"
    )


@pytest.mark.parametrize("case", ["missing", "default", "template", "no-export"])
def test_an_unbuilt_repository_is_one_line_naming_what_to_build(
    case: str, tiny_repository: Path, tmp_path: Path
) -> None:
    repository = {
        "missing": tmp_path / "nowhere",
        "default": None,
        "template": template_directory(),
        "no-export": tmp_path / "copy",
    }[case]
    if case == "no-export":
        shutil.copytree(tiny_repository, tmp_path / "copy")
        (tmp_path / "copy" / "beit_model" / "1" / "model.onnx").unlink()
    args = ports() if repository is None else ["--repository", repository, *ports()]
    result = beit_serve(*args, cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    expected = {
        "missing": "no model repository at",
        "default": "no model repository at output/model_repository",
        "template": "holds the unbuilt template",
        "no-export": "has no beit_model/1/model.onnx",
    }[case]
    assert line.startswith("beit-serve: error: ") and expected in line, line
    if case != "no-export":
        assert "make build, or beit-build --model CHECKPOINT --repository" in line


def test_shared_memory_is_removed_on_stop_and_after_a_killed_beit_serve(
    tiny_repository: Path, tmp_path: Path
) -> None:
    repository = shutil.copytree(tiny_repository, tmp_path / "repository")
    served = start_beit_serve(sys.executable, "-m", "beit_serve", "--repository", repository)
    prefix = f"{SHM_PREFIX}{served.process.pid}_"
    assert shm_regions(prefix), "the Python-backend stubs hold no region named by beit-serve"
    served.process.kill()
    served.process.wait()
    # Triton dies with its beit-serve (it would otherwise hold its ports forever) and takes its stubs along.
    deadline = time.monotonic() + 60
    while processes_mentioning(str(repository)):
        assert time.monotonic() < deadline, "Triton and its stubs outlived a killed beit-serve"
        time.sleep(0.5)
    # The next server removes whatever the killed one left: no exit path leaks /dev/shm.
    server = EmbeddedServer(
        repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with server:
        assert not shm_regions(prefix)
        assert shm_regions(server.shm_prefix)
    assert not shm_regions(server.shm_prefix)


def test_cpu_seconds_count_the_work_of_triton_and_its_stubs(triton_server):
    import numpy as np
    import tritonclient.http as httpclient

    from tests.images import encode, photo

    client = httpclient.InferenceServerClient(triton_server.http_url.removeprefix("http://"))
    images = np.array([[encode(photo(640, 480, seed=i), "JPEG")] for i in range(8)], dtype=np.object_)
    image_input = httpclient.InferInput("IMAGE", list(images.shape), "BYTES")
    image_input.set_data_from_numpy(images)
    before = triton_server.cpu_seconds()
    for _ in range(5):
        client.infer("beit", [image_input])
    assert triton_server.cpu_seconds() > before


def test_onnx_runtime_spinning_is_off_in_the_embedded_model_and_a_bad_setting_refuses_to_load(
    tiny_repository: Path, tmp_path: Path
) -> None:
    from beit_repository import model_config
    from beit_repository.names import EMBEDDED_VARIANT, NETWORK_MODEL, VARIANTS_DIRECTORY
    from beit_serve.server import ServerStartError

    variant = tiny_repository / NETWORK_MODEL / VARIANTS_DIRECTORY / f"{EMBEDDED_VARIANT}.pbtxt"
    assert model_config.parameters(model_config.read(variant))["intra_op_spinning"] == "0"

    def spin_twice(path: Path, config: model_config.ModelConfig) -> bool:
        if path.name != variant.name or config.name != NETWORK_MODEL:
            return False
        model_config.set_parameters(config, {"intra_op_spinning": "2"})
        return True

    broken = model_config.edited_copy(tiny_repository, tmp_path / "repository", spin_twice)
    server = EmbeddedServer(
        broken,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_file=tmp_path / "triton.log",
    )
    with pytest.raises(ServerStartError, match="intra_op_spinning' must be 0 or 1"), server:
        pass
