"""Each image's Python environment, installed exactly as its Dockerfile installs it, running that image's
command from docker-compose.yml on the tiny checkpoint.

"Exactly": the Dockerfile's own `pip install` lines, read from the file, in a clean venv, with this checkout
as the wheel (a non-editable install: only what the wheel carries exists). Two things cannot be the image's
here and are named where they are replaced: the interpreter (this machine's Python 3.11; the 26.06 Triton and
TensorRT images run 3.12, which requires-python accepts), and the container's own programs: the Triton
container's tritonserver and backends (the nvidia-pytriton wheel's Triton, with the Python backend laid out
as the container lays it out) and the TensorRT container's trtexec (which needs a GPU: a stand-in writes an
engine file and trtexec's engine report, tests/fixtures/trtexec_layer_info.json).

The triton image's tests need `beit-serve --tritonserver/--backend-directory` and `beit-serve probe` (the
reliability work, issue 13): until that lands they fail, by design.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from beit_repository import model_config
from beit_repository.names import (
    CONFIG_FILE,
    IMAGE,
    MODEL_VERSION,
    NETWORK_MODEL,
    PIXEL_VALUES,
    PREPROCESS_MODEL,
)
from tests import compose
from tests.conftest import free_port, wait_ready
from tests.images import encode, photo

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build"
OWNER = (4242, 4243) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
"""Who owns the mounted checkout. As root (as in the containers) the outputs must be handed to a user that
is not root; otherwise only this user can own anything, so the ownership check is the weaker same-user one."""


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = compose.load(ROOT / "docker-compose.yml", {})["services"]
    return services


def run(*command: str | Path, cwd: Path, env: Mapping[str, str] | None = None) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, env=env)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def dockerfile_instructions(name: str, instruction: str) -> list[str]:
    """The arguments of every `instruction` line of build/NAME, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (BUILD / name).read_text())
    return [line[len(instruction) + 1 :] for line in text.splitlines() if line.startswith(f"{instruction} ")]


def pip_installs(name: str) -> list[list[str]]:
    """Each `pip install ...` of the Dockerfile's RUN lines, as its argument list."""
    installs = []
    for run_line in dockerfile_instructions(name, "RUN"):
        for command in run_line.split("&&"):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                installs.append(words[2:])
    return installs


def entrypoint(name: str) -> list[str]:
    (line,) = dockerfile_instructions(name, "ENTRYPOINT")
    words: list[str] = json.loads(line)
    return words


def install_like(dockerfile: str, venv: Path, wheel: Path) -> Path:
    """A clean venv with the Dockerfile's pip installs, `.` being the wheel. Returns its bin/."""
    run(sys.executable, "-m", "venv", venv, cwd=venv.parent)
    for arguments in pip_installs(dockerfile):
        if "--index-url" in arguments:
            # Dockerfile.build takes the CPU torch wheel from PyTorch's index; this machine's pip
            # configuration resolves the same pin to it (tests/test_wheel_install.py does the same).
            index = arguments.index("--index-url")
            arguments = arguments[:index] + arguments[index + 2 :]
        arguments = [
            str(wheel) + argument[1:] if argument.startswith(".") else argument for argument in arguments
        ]
        run(venv / "bin" / "pip", "install", "--quiet", *arguments, cwd=venv.parent)
    return venv / "bin"


def mapped(arguments: list[str], paths: Mapping[str, Path | str]) -> list[str]:
    """Container paths in `arguments` replaced by the host paths standing in for them (longest first)."""
    out = []
    for argument in arguments:
        for container in sorted(paths, key=len, reverse=True):
            if argument == container or argument.startswith(f"{container}/"):
                argument = str(paths[container]) + argument[len(container) :]
                break
        out.append(argument)
    return out


def checkout_owned_by_owner(tmp_path: Path) -> Path:
    """A directory standing in for the mounted checkout, owned by OWNER."""
    project = tmp_path / "project"
    project.mkdir()
    os.chown(project, *OWNER)
    return project


def owners(directory: Path) -> set[tuple[int, int]]:
    paths = [directory, *directory.rglob("*")]
    return {(path.lstat().st_uid, path.lstat().st_gid) for path in paths}


def image_environment(venv_bin: Path, **extra: str) -> dict[str, str]:
    """The container's PATH puts its Python first; here the image venv's bin/ stands in for it."""
    return {**os.environ, "PATH": os.pathsep.join([str(venv_bin), os.environ["PATH"]]), **extra}


# -- build image ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def build_image(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_like("Dockerfile.build", tmp_path_factory.mktemp("build-image") / "venv", wheel)


def test_the_build_image_installs_the_build_extra_alone_non_editable() -> None:
    assert pip_installs("Dockerfile.build") == [
        ["torch==2.13.0", "--index-url", "https://download.pytorch.org/whl/cpu"],
        [".[build]"],
    ]


def test_the_build_images_command_builds_a_checkpoint_into_output_owned_by_the_checkouts_owner(
    build_image: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """`docker compose run --rm build`: failed on importing onnxruntime (absent from the build extra), then
    on the template path of an installed package. Both would fail here."""
    build = compose_services()["build"]
    output = tmp_path / "output"
    output.mkdir()
    paths = {
        "/project": checkout_owned_by_owner(tmp_path),
        "/workspace/output": output,
        "run_as_owner.sh": BUILD / "run_as_owner.sh",
    }
    command = mapped([*entrypoint("Dockerfile.build"), *build["command"]], paths)
    command[command.index("--model") + 1] = str(tiny_checkpoint)
    workdir = tmp_path / "workspace"
    workdir.mkdir()
    run(*command, cwd=workdir, env=image_environment(build_image))
    repository = output / "model_repository"
    assert (repository / NETWORK_MODEL / "1" / "model.onnx").is_file()
    assert (repository / NETWORK_MODEL / CONFIG_FILE).read_text().startswith("# Generated by beit-build")
    assert owners(output) == {OWNER}


# -- triton image --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton_image(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_like("Dockerfile.triton", tmp_path_factory.mktemp("triton-image") / "venv", wheel)


@pytest.fixture(scope="module")
def container_backends(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/opt/tritonserver/backends as the Triton container lays it out (python/ with libtriton_python.so
    and the stub), from the nvidia-pytriton wheel, whose Triton stands in for the container's."""
    from beit_serve import distribution

    return distribution.prepare_backend_directory(tmp_path_factory.mktemp("backends"))


def test_the_triton_image_installs_the_project_with_no_extra() -> None:
    assert pip_installs("Dockerfile.triton") == [["."]]


def test_the_triton_images_beit_serve_has_the_flags_compose_and_kubernetes_use(triton_image: Path) -> None:
    help_text = run(triton_image / "beit-serve", "--help", cwd=triton_image)
    for flag in ("--tritonserver", "--backend-directory", "--repository", "--model-config-name"):
        assert flag in help_text, flag
    probe_help = run(triton_image / "beit-serve", "probe", "--help", cwd=triton_image)
    assert "--url" in probe_help and "--timeout" in probe_help


def test_the_triton_images_healthcheck_passes_on_a_serving_server_and_fails_on_a_dead_one(
    triton_image: Path, triton_server: Any, tmp_path: Path
) -> None:
    healthcheck = compose_services()["triton"]["healthcheck"]["test"][1:]
    live = mapped(healthcheck, {"http://127.0.0.1:8000": triton_server.http_url})
    run(triton_image / live[0], *live[1:], cwd=tmp_path)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{unused.getsockname()[1]}"
        dead = mapped(healthcheck, {"http://127.0.0.1:8000": dead_url})
        result = subprocess.run([triton_image / dead[0], *dead[1:]], capture_output=True, text=True)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


NETWORK_STAND_IN = """
# Stand-in for the container's onnxruntime backend, which the nvidia-pytriton wheel's Triton lacks: zeros
# of the configured output shapes, so the ensembles around beit_model load and Triton reports ready.
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.outputs = {output["name"]: [int(dim) for dim in output["dims"]] for output in config["output"]}

    def execute(self, requests):
        responses = []
        for request in requests:
            batch = request.inputs()[0].as_numpy().shape[0]
            tensors = [
                pb_utils.Tensor(name, np.zeros([batch, *dims], np.float32))
                for name, dims in self.outputs.items()
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
"""


@pytest.fixture
def gpu_repository_on_cpu(tiny_repository: Path, tmp_path: Path) -> Path:
    """The built repository, every model on its GPU-deployment config.pbtxt; beit_model keeps its config's
    tensors and batching but runs NETWORK_STAND_IN on a CPU instance."""
    repository = tmp_path / "models"
    shutil.copytree(tiny_repository, repository)
    network = repository / NETWORK_MODEL
    config = model_config.read(network / CONFIG_FILE)
    config.backend = "python"
    config.ClearField("optimization")
    for group in config.instance_group:
        group.kind = group.KIND_CPU
    model_config.write(network / CONFIG_FILE, config)
    (network / MODEL_VERSION / "model.py").write_text(NETWORK_STAND_IN)
    return repository


@pytest.fixture
def served_by_triton_image(
    triton_image: Path, container_backends: Path, gpu_repository_on_cpu: Path, tmp_path: Path
) -> Iterator[str]:
    """The compose `triton` command run in the image's environment."""
    from beit_serve import distribution

    triton = compose_services()["triton"]
    http_port = free_port()
    paths = {
        "/opt/tritonserver/bin/tritonserver": distribution.tritonserver_binary(),
        "/opt/tritonserver/backends": container_backends,
        "/models": gpu_repository_on_cpu,
    }
    command = mapped(triton["command"], paths)
    ports = {"--http-port": http_port, "--grpc-port": free_port(), "--metrics-port": free_port()}
    for flag, port in ports.items():
        command[command.index(flag) + 1] = str(port)
    # The container's environment finds Triton's libraries; the wheel's Triton finds them here.
    environment = image_environment(triton_image, LD_LIBRARY_PATH=distribution.library_path())
    process = subprocess.Popen([str(triton_image / command[0]), *command[1:]], cwd=tmp_path, env=environment)
    try:
        wait_ready(f"http://127.0.0.1:{http_port}", process)  # type: ignore[arg-type]
        yield f"127.0.0.1:{http_port}"
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_triton_images_command_serves_the_gpu_preprocessor_config_from_the_images_python(
    served_by_triton_image: str,
) -> None:
    """The stub runs the image's Python: beit_preprocess imports beit_preprocessing, Pillow and numpy from
    the installed wheel, under its GPU-deployment config (instances and threads as the container runs it)."""
    client = httpclient.InferenceServerClient(served_by_triton_image)
    images = np.array([[encode(photo(320, 240), "JPEG")]], dtype=np.object_)
    image_input = httpclient.InferInput(IMAGE, list(images.shape), "BYTES")
    image_input.set_data_from_numpy(images)
    pixels = client.infer(PREPROCESS_MODEL, [image_input]).as_numpy(PIXEL_VALUES)
    assert pixels is not None and pixels.shape == (1, 3, 224, 224) and pixels.dtype == np.uint8


# -- tensorrt image ------------------------------------------------------------------------------------------

FAKE_TRTEXEC = """#!{python}
# Stand-in for the TensorRT container's trtexec (it needs a GPU): an engine file at --saveEngine and
# trtexec's engine report at --exportLayerInfo, as trtexec writes them.
import shutil, sys
args = dict(arg[2:].split("=", 1) for arg in sys.argv[1:] if arg.startswith("--") and "=" in arg)
open(args["saveEngine"], "wb").write(b"engine")
shutil.copy({report!r}, args["exportLayerInfo"])
"""


@pytest.fixture(scope="module")
def tensorrt_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's venv, plus /opt/beit-tensorrt laid out as its COPY lines lay it out. Returns its root."""
    root = tmp_path_factory.mktemp("tensorrt-image")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=root)
    for arguments in pip_installs("Dockerfile.tensorrt"):
        run(venv / "bin" / "pip", "install", "--quiet", *arguments, cwd=root)
    for copy in dockerfile_instructions("Dockerfile.tensorrt", "COPY"):
        *sources, destination = copy.split()
        target = root / destination.lstrip("/")
        for source in sources:
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, dirs_exist_ok=True)
            else:
                where = target / Path(source).name if destination.endswith("/") else target
                where.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, where)
    bin_dir = root / "usr" / "bin"
    bin_dir.mkdir(parents=True)
    trtexec = bin_dir / "trtexec"
    report = Path(__file__).resolve().parent / "fixtures" / "trtexec_layer_info.json"
    trtexec.write_text(FAKE_TRTEXEC.format(python=venv / "bin" / "python", report=str(report)))
    trtexec.chmod(trtexec.stat().st_mode | stat.S_IXUSR)
    return root


def test_the_tensorrt_images_command_builds_a_checked_plan_owned_by_the_checkouts_owner(
    tensorrt_image: Path, tiny_repository: Path, tmp_path: Path
) -> None:
    tensorrt = compose_services()["tensorrt"]
    output = tmp_path / "output"
    shutil.copytree(tiny_repository, output / "model_repository")
    paths = {
        "/project": checkout_owned_by_owner(tmp_path),
        "/workspace/output": output,
        "/opt/beit-tensorrt": tensorrt_image / "opt" / "beit-tensorrt",
        "run_as_owner.sh": tensorrt_image / "usr" / "local" / "bin" / "run_as_owner.sh",
    }
    command = mapped([*entrypoint("Dockerfile.tensorrt"), *tensorrt["command"]], paths)
    # Only the image's programs: its venv (python3 with onnx and tritonclient) and trtexec, then the system.
    path = os.pathsep.join(
        [str(tensorrt_image / "venv" / "bin"), str(tensorrt_image / "usr" / "bin"), "/usr/bin", "/bin"]
    )
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env={"PATH": path})
    assert result.returncode == 0, result.stderr
    assert (output / "model_repository" / NETWORK_MODEL / "1" / "model.plan").read_bytes() == b"engine"
    assert "all 5 LayerNormalization layers run in FP32" in result.stdout
    assert owners(output) == {OWNER}


# -- locust image --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locust_image(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_like("Dockerfile.locust", tmp_path_factory.mktemp("locust-image") / "venv", wheel)


def test_the_locust_images_entrypoint_runs_the_locustfile_against_a_server(
    locust_image: Path, triton_server: Any, tmp_path: Path
) -> None:
    """The image's /app holds loadtest/ (COPY loadtest loadtest); the compose command's -f and --host, run
    headless for a few seconds instead of as a master waiting for workers."""
    app = tmp_path / "app"
    shutil.copytree(
        ROOT / "loadtest", app / "loadtest", ignore=shutil.ignore_patterns("__pycache__", "results")
    )
    master = compose_services()["locust-master"]["command"]
    locustfile = master[master.index("-f") + 1]
    (program,) = entrypoint("Dockerfile.locust")
    run_for = ["--headless", "-u", "2", "-r", "2", "-t", "15s", "--corpus-size", "4", "--csv", "run"]
    command = [program, "-f", locustfile, *run_for]
    run(locust_image / program, *command[1:], "--host", triton_server.http_url, "HttpBeitUser", cwd=app)
    rows = (app / "run_stats.csv").read_text().splitlines()
    header, aggregated = rows[0].split(","), rows[-1].split(",")
    assert int(aggregated[header.index("Request Count")]) > 0
    assert int(aggregated[header.index("Failure Count")]) == 0
