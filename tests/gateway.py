"""beit-gateway started as a user starts it (the console script, its own options), and local HTTP servers
that play the internet for image URLs."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
"""The running interpreter's scripts: beit-gateway as this environment installed it."""


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_records(self) -> list[str]:
        return self.log.read_text().splitlines()


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "beit-gateway exited before it answered /health"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer /health in time")


@contextmanager
def running_gateway(
    *options: str, log: Path, env: dict[str, str] | None = None, executable: Path | None = None
) -> Iterator[GatewayProcess]:
    """`beit-gateway OPTIONS --host 127.0.0.1 --port <free>`, its JSON log in `log`; stopped with SIGTERM."""
    port = free_port()
    command = [str(executable or BIN / "beit-gateway"), *options, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    gateway = GatewayProcess(process, f"http://127.0.0.1:{port}", log)
    try:
        wait_healthy(gateway.url, process)
        yield gateway
    finally:
        process.terminate()
        process.wait(timeout=60)


Handler = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class ImageServer:
    """A local HTTP server: each path answers what its handler writes. `requests` records (path, Host)."""

    routes: dict[str, Handler]
    requests: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def send(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    handler.send_response(status)
    for name, value in {"Content-Length": str(len(body)), **headers}.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()
    handler.wfile.write(body)


@contextmanager
def image_server(routes: dict[str, Handler]) -> Iterator[ImageServer]:
    served = ImageServer(routes)

    class RequestHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append((self.path, self.headers.get("Host", "")))
            route = served.routes.get(self.path)
            if route is None:
                send(self, 404, b"not here")
            else:
                route(self)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
    served.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
