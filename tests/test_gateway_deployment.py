"""How beit-gateway is deployed, checked without Docker: the compose service, the image's Dockerfile (its
Python environment installed as the Dockerfile does, in a clean venv, then run against Triton), and
`make serve`, which starts it beside Triton and stops both on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import pytest

from beit_gateway.cli import parse_args
from tests import compose
from tests.conftest import free_port, processes_mentioning
from tests.gateway import ROOT, running_gateway
from tests.images import encode, photo

DOCKERFILE = ROOT / "build" / "Dockerfile.gateway"
DOCKERIGNORE = ROOT / "build" / "Dockerfile.gateway.dockerignore"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, arguments = line.partition(" ")
            result.append((keyword.upper(), arguments.strip()))
    return result


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return compose.load(ROOT / "docker-compose.yml", {})["services"]


def test_compose_runs_the_gateway_image_on_8080_in_front_of_tritons_grpc_port(
    services: dict[str, Any],
) -> None:
    gateway, triton = services["gateway"], services["triton"]
    assert gateway["build"] == {"context": ".", "dockerfile": "build/Dockerfile.gateway"}
    assert gateway["image"] == "beit-triton/gateway:26.06"
    assert compose.published_ports(gateway) == {8080}
    grpc_port = compose.flag(triton["command"], "grpc-port")
    args = parse_args(gateway["command"])
    assert args.settings.triton_url == f"grpc://triton:{grpc_port}" and args.port == 8080
    assert gateway["depends_on"] == ["triton"]
    assert not gateway.get("profiles"), "docker compose up starts the gateway"
    assert "http://localhost:8080/health" in " ".join(gateway["healthcheck"]["test"])
    # The key comes from the environment, never from the file; unset means no key.
    assert gateway["environment"] == {"BEIT_GATEWAY_API_KEY": ""}
    keyed = compose.load(ROOT / "docker-compose.yml", {"BEIT_GATEWAY_API_KEY": "k"})["services"]["gateway"]
    assert keyed["environment"] == {"BEIT_GATEWAY_API_KEY": "k"}


def test_the_image_exposes_8080_and_defaults_to_what_compose_runs(services: dict[str, Any]) -> None:
    steps = instructions(DOCKERFILE)
    values = {keyword: arguments for keyword, arguments in steps}
    assert values["EXPOSE"] == "8080"
    assert json.loads(values["ENTRYPOINT"]) == ["beit-gateway"]
    assert json.loads(values["CMD"]) == services["gateway"]["command"]
    assert values["USER"] != "root"
    ignore = DOCKERIGNORE.read_text().splitlines()
    assert ignore[ignore.index("*") :][0] == "*", "everything is left out but what the image needs"
    for keyword, arguments in steps:
        if keyword == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                allowed = f"!{source}/" if (ROOT / source).is_dir() else f"!{source}"
                assert allowed in ignore, f"{DOCKERIGNORE.name} leaves out {source}, which the image copies"


@pytest.mark.server
def test_the_images_python_environment_installs_and_serves_as_its_dockerfile_says(
    triton_server: Any, tmp_path: Path
) -> None:
    """COPY and RUN replayed from the Dockerfile into a clean venv: only what the image copies is there."""
    context = tmp_path / "src"
    context.mkdir()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    environment = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    environment.pop("VIRTUAL_ENV", None)
    ran_pip = False
    for keyword, arguments in instructions(DOCKERFILE):
        if keyword == "COPY":
            *sources, destination = arguments.split()
            for source in sources:
                target = context / (destination if destination not in ("./", ".") else Path(source).name)
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy2(ROOT / source, target)
        elif keyword == "RUN" and "pip install" in arguments:
            result = subprocess.run(
                ["bash", "-c", arguments], cwd=context, env=environment, capture_output=True, text=True
            )
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            assert "beit-gateway installed" in result.stdout
            ran_pip = True
    assert ran_pip
    # The installed package, not this checkout: run from elsewhere, with the image's entrypoint.
    entrypoint = venv / "bin" / "beit-gateway"
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import beit_gateway; print(beit_gateway.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "site-packages" in where.stdout and str(ROOT) not in where.stdout
    log = tmp_path / "gateway.log"
    with running_gateway("--triton-url", triton_server.grpc_url, log=log, executable=entrypoint) as gateway:
        image = encode(photo(64, 48), "JPEG")
        response = httpx.post(
            f"{gateway.url}/models/beit", content=image, headers={"Content-Type": "image/jpeg"}
        )
        assert response.status_code == 200, response.text
        assert len(response.json()) == 5
        assert httpx.get(f"{gateway.url}/ready").status_code == 200


# ---------------------------------------------------------------- make serve and its supervisor


def supervise(*commands: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "beit_gateway.supervise", *commands], cwd=ROOT, start_new_session=True
    )


def counting_server(marker: Path) -> str:
    """A command that records each SIGTERM it gets in `marker`, then exits cleanly on the first."""
    script = (
        "import signal, sys, time\n"
        f"def stop(*_):\n    open({str(marker)!r}, 'a').write('TERM\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open({str(marker)!r} + '.started', 'w').close()\n"
        "time.sleep(120)\n"
    )
    return shlex.join([sys.executable, "-c", script])


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_ctrl_c_stops_every_server_once_and_the_supervisor_exits_cleanly(tmp_path: Path) -> None:
    markers = [tmp_path / "a", tmp_path / "b"]
    supervisor = supervise(*(counting_server(marker) for marker in markers))
    for marker in markers:
        wait_for(marker.with_name(marker.name + ".started"))
    os.killpg(supervisor.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to its foreground group
    assert supervisor.wait(timeout=30) == 0
    assert [marker.read_text() for marker in markers] == ["TERM\n", "TERM\n"]


def test_a_server_that_exits_stops_the_other_and_its_code_is_the_supervisors(tmp_path: Path) -> None:
    marker = tmp_path / "survivor"
    failing = shlex.join([sys.executable, "-c", "import time; time.sleep(1); raise SystemExit(3)"])
    supervisor = supervise(counting_server(marker), failing)
    assert supervisor.wait(timeout=30) == 3
    assert marker.read_text() == "TERM\n"


def refused(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.server
def test_make_serve_starts_triton_and_the_gateway_and_ctrl_c_stops_both(
    tiny_checkpoint: Path, tiny_repository: Path, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("HTTP_PORT", "GRPC_PORT", "METRICS_PORT", "GATEWAY_PORT")}
    variables = [f"{name}={port}" for name, port in ports.items()]
    log = tmp_path / "make.log"
    with open(log, "wb") as output:
        make = subprocess.Popen(
            ["make", "serve", f"MODEL={tiny_checkpoint}", f"REPOSITORY={tiny_repository}", *variables],
            cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert make.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "make serve was not ready in time:\n" + log.read_text()[-3000:]
            )
            try:
                with urllib.request.urlopen(f"{gateway}/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        answer = httpx.post(f"{gateway}/models/beit", content=encode(photo(64, 48), "JPEG"))
        assert answer.status_code == 200 and len(answer.json()) == 5
        assert not refused(ports["HTTP_PORT"])
    finally:
        os.killpg(make.pid, signal.SIGINT)
        make.wait(timeout=120)
    assert all(refused(port) for port in ports.values()), log.read_text()[-3000:]
    assert processes_mentioning(f"--port {ports['GATEWAY_PORT']}") == []
    assert processes_mentioning(f"--grpc-port {ports['GRPC_PORT']}") == []
    text = log.read_text()
    assert "SIGINT received: stopping every server" in text
    assert "Application shutdown complete" in text
    assert "SIGTERM received: draining, then shutting down" in text
