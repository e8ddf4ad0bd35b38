"""beit-serve as a subprocess on free loopback ports, for the soak, fault and fuzz runs."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class BeitServe:
    process: subprocess.Popen[bytes]
    http_url: str
    grpc_url: str
    log: Path | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (a drain), and its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def readiness(http_url: str, path: str = "/v2/health/ready", timeout: float = 2.0) -> int | str:
    """The HTTP status of a readiness route, or the name of the error when nothing answered."""
    try:
        with urllib.request.urlopen(http_url + path, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError as error:
        return type(error).__name__


def wait_ready(serve: BeitServe, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serve.process.poll() is not None:
            raise RuntimeError(f"beit-serve exited with code {serve.process.returncode} before it was ready")
        if readiness(serve.http_url) == 200:
            return
        time.sleep(0.2)
    raise TimeoutError(f"beit-serve was not ready within {timeout:.0f} s")


@contextmanager
def beit_serve(repository: Path, *args: str, log: Path | None = None) -> Iterator[BeitServe]:
    """beit-serve on `repository` with `args`, ready; drained and stopped on exit."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    command: Sequence[str] = [
        sys.executable,
        "-m",
        "beit_serve",
        "--repository",
        str(repository),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        *args,
    ]
    output = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        serve = BeitServe(process, f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}", log)
        try:
            wait_ready(serve)
            yield serve
        finally:
            serve.stop()
    finally:
        if log is not None and not isinstance(output, int):
            output.close()


EXIT_LINE = re.compile(r"Shutting down \(exit code (\d+)\)")


def run_locust(command: Sequence[str], log: Path, timeout: float, cwd: Path) -> int:
    """Runs Locust to its end and returns its exit code. Locust with gRPC users (gevent) sometimes hangs at
    interpreter exit after it has written everything and logged "Shutting down (exit code N)" (seen here
    after a load shape stopped the test): past that line it gets 15 s, then is killed, and N is its code. The
    line is logged at INFO, Locust's default level: do not raise --loglevel."""
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=cwd)
        deadline = time.monotonic() + timeout
        exited_at: float | None = None
        while process.poll() is None:
            if exited_at is None and (match := EXIT_LINE.search(log.read_text(errors="replace"))):
                exited_at = time.monotonic()
                code = int(match.group(1))
            if (exited_at is not None and time.monotonic() - exited_at > 15) or time.monotonic() > deadline:
                process.kill()
                process.wait()
                if exited_at is None:
                    raise TimeoutError(f"Locust ran past {timeout:.0f} s: {log}")
                return code
            time.sleep(0.5)
        return process.returncode
