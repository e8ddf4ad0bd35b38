"""The project as a user installs it: the built wheel, not this checkout, in a fresh virtual environment.

An editable install finds everything in the source tree; a regular install has only what the wheel carries.
These tests build the wheel, install it with its extras into a new venv (dependencies resolved from its own
metadata), then build and serve a checkpoint from outside the checkout; and install it without extras, as
an application or a GPU host that only calls the server would, then classify with the CLI.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from beit_repository.names import CLASSIFY_MODEL, IMAGE, NETWORK_MODEL, PROBABILITIES
from tests.conftest import start_beit_serve
from tests.images import encode, photo

ROOT = Path(__file__).resolve().parents[1]
# The CPU build of torch that pyproject pins; pip takes it from the machine's local wheel.
TORCH = "torch==2.13.0"

pytestmark = pytest.mark.server


def run(*command: str | Path, cwd: Path) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel and its build and serve extras: what `pip install beit-triton[build,serve]`
    gives a user. Returns its bin/ directory."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", venv, cwd=venv)
    run(venv / "bin" / "pip", "install", "--quiet", f"{wheel}[build,serve]", TORCH, cwd=venv)
    return venv / "bin"


def test_the_installed_template_is_the_wheels_own_copy(installed: Path, tmp_path: Path) -> None:
    script = "from beit_repository.template import template_directory as t\nprint(t())\n"
    script += "print(sorted(p.name for p in t().iterdir()))"
    location = run(installed / "python", "-c", script, cwd=tmp_path).splitlines()
    assert "site-packages" in location[0] and str(ROOT) not in location[0]
    assert location[1] == "['beit', 'beit_embedding', 'beit_model', 'beit_preprocess']"


def test_the_wheel_ships_the_imagenet_label_lists_with_their_provenance(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("imagenet1k_labels.txt", "imagenet22k_labels.txt", "PROVENANCE.md"):
        assert f"beit_build/data/{data}" in names
    for data in ("imagenet1k_synsets.tsv", "imagenet22k_synsets.tsv", "PROVENANCE.md"):
        assert f"beit_client/data/{data}" in names


def test_a_wheel_install_builds_and_serves_a_checkpoint(
    installed: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    run(installed / "beit-build", "--model", tiny_checkpoint, cwd=tmp_path)
    repository = tmp_path / "output" / "model_repository"
    assert (repository / NETWORK_MODEL / "1" / "model.onnx").is_file()
    server = start_beit_serve(installed / "beit-serve", cwd=tmp_path)
    try:
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        images = np.array([[encode(photo(320, 240), "JPEG")]], dtype=np.object_)
        image_input = httpclient.InferInput(IMAGE, list(images.shape), "BYTES")
        image_input.set_data_from_numpy(images)
        top3 = httpclient.InferRequestedOutput(PROBABILITIES, class_count=3)
        (row,) = client.infer(CLASSIFY_MODEL, [image_input], outputs=[top3]).as_numpy(PROBABILITIES)
        assert [entry.decode().split(":", 2)[2].startswith("class ") for entry in row] == [True] * 3
    finally:
        server.process.terminate()
        server.process.wait(timeout=60)


@pytest.fixture(scope="module")
def client_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel alone, no extras: what `pip install beit-triton` gives an application."""
    venv = tmp_path_factory.mktemp("client-venv")
    run(sys.executable, "-m", "venv", venv, cwd=venv)
    run(venv / "bin" / "pip", "install", "--quiet", wheel, cwd=venv)
    return venv / "bin"


def test_the_client_only_install_has_no_torch_and_classifies_with_the_cli(
    client_only: Path, triton_server: object, tmp_path: Path
) -> None:
    heavy = ("torch", "transformers", "onnx", "onnxruntime", "pytriton", "cuda")
    script = f"import importlib.util as u; print([m for m in {heavy!r} if u.find_spec(m)])"
    assert run(client_only / "python", "-c", script, cwd=tmp_path).strip() == "[]"
    assert "classify" in run(client_only / "beit-client", "--help", cwd=tmp_path)
    image = tmp_path / "photo.jpg"
    image.write_bytes(encode(photo(320, 240), "JPEG"))
    for url in (triton_server.http_url, triton_server.grpc_url):  # type: ignore[attr-defined]
        out = run(
            client_only / "beit-client",
            "classify",
            image,
            "--url",
            url,
            "--json",
            "--top-k",
            "3",
            cwd=tmp_path,
        )
        [line] = [json.loads(line) for line in out.splitlines()]
        assert line["source"] == str(image) and len(line["predictions"]) == 3


def test_the_client_only_install_evaluates_and_says_the_png_needs_matplotlib(
    client_only: Path, triton_server: object, tmp_path: Path
) -> None:
    for name in ("class 1", "class 4"):
        (tmp_path / "val" / name).mkdir(parents=True)
        (tmp_path / "val" / name / "a.jpg").write_bytes(encode(photo(64, 48), "JPEG"))
    url = triton_server.http_url  # type: ignore[attr-defined]
    command = [client_only / "beit-client", "evaluate", tmp_path / "val", "--url", url]
    result = subprocess.run(
        [*map(str, command), "--output", "out.jsonl"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "images: 2 classified, 0 failed; classes: 2" in result.stdout
    assert "note: no PNG: a PNG needs matplotlib, which the client does not install" in result.stderr
    assert json.loads((tmp_path / "out.report.json").read_text())["images"] == 2
    assert not (tmp_path / "out.report.png").exists()
    # Asked for by name, a PNG that cannot be drawn fails the command.
    result = subprocess.run(
        [*map(str, command), "--png", "plot.png"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1 and "error: no PNG: a PNG needs matplotlib" in result.stderr
