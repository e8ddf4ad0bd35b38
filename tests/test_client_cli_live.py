"""What a newcomer meets with beit-client against the real embedded Triton server: a scheme/port mix-up, an
image the server refuses, and Ctrl-C in the middle of a batch job. Each says so in one line, no traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from beit_client import AsyncBeitClient, BeitClient, InvalidImageError, ServerError, ServerUnavailableError
from beit_client.cli import EXIT_INTERRUPTED, main
from tests.conftest import free_port
from tests.images import encode, photo
from tests.jobs import lines_in, start_foreground_job

pytestmark = pytest.mark.server

NOT_AN_IMAGE = "not an image in a supported format (JPEG, PNG, WEBP, BMP, GIF, TIFF)"


def port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    return line


@pytest.fixture
def cat(tmp_path: Path) -> str:
    path = tmp_path / "cat.jpg"
    path.write_bytes(encode(photo(64, 48), "JPEG"))
    return str(path)


# ---------------------------------------------------------------- a scheme/port mix-up


def test_http_to_the_grpc_port_names_the_url_and_suggests_grpc(triton_server: Any, cat: str, capsys) -> None:
    url = f"http://127.0.0.1:{port(triton_server.grpc_url)}"
    assert main(["classify", cat, "--url", url, "--max-retries", "0"]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: server unavailable at {url}: the answer is not HTTP; is port ")
    assert "gRPC 8001" in line


def test_http_to_the_metrics_port_names_the_url_and_triton_s_ports(
    triton_server: Any, cat: str, capsys
) -> None:
    url = f"http://127.0.0.1:{triton_server.metrics_port}"
    # The metrics port answers every health route with 200: health must not call it ready.
    for command in ("info", "health"):
        assert main([command, "--url", url]) == 1
        line = one_error_line(capsys)
        assert line.startswith(f"error: {url} answered HTTP, but not as Triton's API")
        assert "HTTP 8000, gRPC 8001, metrics 8002" in line


def test_grpc_to_the_http_port_names_the_url(triton_server: Any, cat: str, capsys) -> None:
    url = f"grpc://127.0.0.1:{port(triton_server.http_url)}"
    assert main(["classify", cat, "--url", url, "--max-retries", "0"]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"error: server unavailable at {url}: ")
    assert line.endswith(f"is the server running, with its gRPC port at {port(url)}?")


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_a_refused_connection_reads_the_same_over_either_protocol(scheme: str, cat: str, capsys) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}"
    assert main(["classify", cat, "--url", url, "--max-retries", "0"]) == 1
    line = one_error_line(capsys)
    protocol = "HTTP" if scheme == "http" else "gRPC"
    assert line.startswith(f"error: server unavailable at {url}: ")
    assert line.endswith(f"; is the server running, with its {protocol} port at {port(url)}?")
    assert "Connection refused" in line


async def test_the_async_client_translates_the_same_mix_ups(triton_server: Any) -> None:
    grpc_port = f"http://127.0.0.1:{port(triton_server.grpc_url)}"
    async with AsyncBeitClient(grpc_port, max_retries=0) as client:
        with pytest.raises(ServerUnavailableError, match="the answer is not HTTP"):
            await client.model_info()
    metrics_port = f"http://127.0.0.1:{triton_server.metrics_port}"
    async with AsyncBeitClient(metrics_port, max_retries=0) as client:
        with pytest.raises(ServerError, match="answered HTTP, but not as Triton's API"):
            await client.model_info()


# ---------------------------------------------------------------- an image the server refuses


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_refused_image_is_one_line_with_one_index_and_no_internals(
    triton_server: Any, protocol: str, tmp_path: Path, capsys
) -> None:
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "a.jpg").write_bytes(encode(photo(64, 48), "JPEG"))
    (photos / "sub" / "corrupt.jpg").write_bytes(b"this is not an image" * 10)
    (photos / "sub" / "z.jpg").write_bytes(encode(photo(48, 64), "JPEG"))
    assert main(["classify", str(photos), "--url", url, "--json"]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    [line] = [line for line in captured.err.splitlines() if line.startswith("failed:")]
    assert line == f"failed: image 1 ({photos / 'sub' / 'corrupt.jpg'}): {NOT_AN_IMAGE}"
    # The SDK's error carries the same reason, the facts in its fields.
    with BeitClient(url) as client:
        [error] = client.classify([str(photos / "sub" / "corrupt.jpg")], return_exceptions=True)
    assert isinstance(error, InvalidImageError)
    assert str(error) == f"image 0 ({photos / 'sub' / 'corrupt.jpg'}): {NOT_AN_IMAGE}"
    assert (error.index, error.model) == (0, "beit")
    assert error.status_code == (400 if protocol == "http" else "INVALID_ARGUMENT")


def test_a_trained_checkpoint_gets_no_random_weights_warning(triton_server: Any, cat: str, capsys) -> None:
    assert main(["classify", cat, "--url", triton_server.http_url]) == 0
    assert main(["info", "--url", triton_server.http_url]) == 0
    assert "random weights" not in capsys.readouterr().err


# ---------------------------------------------------------------- Ctrl-C in a batch job


def inference_count(http_url: str) -> int:
    with urllib.request.urlopen(f"{http_url}/v2/models/beit/stats", timeout=10) as response:
        [stats] = json.load(response)["model_stats"]
    return int(stats["inference_count"])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ctrl_c_stops_a_batch_job_within_a_second_and_a_rerun_finishes_it(
    triton_server: Any, protocol: str, tmp_path: Path
) -> None:
    url = triton_server.http_url if protocol == "http" else triton_server.grpc_url
    photos = tmp_path / "photos"
    photos.mkdir()
    image = encode(photo(160, 120), "JPEG")
    count = 1500
    for i in range(count):
        (photos / f"{i:04d}.jpg").write_bytes(image)
    output = tmp_path / "results" / "run.jsonl"
    command = [
        Path(sys.executable).parent / "beit-client", "classify", photos, "--url", url,
        "--output", output, "--concurrency", "2",
    ]  # fmt: skip
    job = start_foreground_job(command)
    deadline = time.monotonic() + 120
    while lines_in(output) < 64 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.poll() is None, "the job ended before it could be interrupted"
    job.send_signal(signal.SIGINT)
    start = time.monotonic()
    _, err = job.communicate(timeout=60)
    elapsed = time.monotonic() - start
    assert job.returncode == EXIT_INTERRUPTED and elapsed < 1.0, (elapsed, err[-2000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert f"interrupted: {len(written)} written to {output}" in err
    assert 64 <= len(written) < count
    # Pending requests were cancelled: after those in flight, the server gets nothing more from the job.
    time.sleep(2)
    settled = inference_count(triton_server.http_url)
    time.sleep(1)
    assert inference_count(triton_server.http_url) == settled

    rerun = subprocess.run([*command, "--no-progress"], capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{count - len(written)} written, {len(written)} already done" in rerun.stderr
    sources = [json.loads(line)["source"] for line in output.read_text().splitlines()]
    assert len(sources) == len(set(sources)) == count
