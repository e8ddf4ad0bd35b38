"""beit-serve as a user runs it: a process that serves until a signal, then leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from tests.conftest import start_beit_serve

pytestmark = pytest.mark.server


def processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


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
