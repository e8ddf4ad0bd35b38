"""A Triton server: a `tritonserver` subprocess owned by a context manager; by default the binary shipped in
the nvidia-pytriton wheel, or any other (`tritonserver=`, e.g. the Triton container's)."""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from beit_repository.names import EMBEDDED_VARIANT
from beit_serve import distribution
from beit_serve.processes import Stub, group_cpu_seconds, stubs_of

logger = logging.getLogger(__name__)


class ServerStartError(RuntimeError):
    """Triton exited, or did not become ready in time; the message carries the end of its log."""


SHM_DIRECTORY = Path("/dev/shm")
SHM_PREFIX = "beit_serve_"
"""The Python backend's shared-memory regions are named PREFIX + a UUID (python_backend
src/stub_launcher.cc); each server gives them beit_serve_<pid>_<n>_ so that it can find and remove what a
crash leaves behind: a region killed stubs never unlink holds its memory until reboot."""
PR_SET_PDEATHSIG = 1
_instances = itertools.count()


@dataclass(frozen=True)
class Restriction:
    """Triton's `--http-restricted-api` / `--grpc-restricted-protocol`: `apis` answer only requests carrying
    `header: value`. Over gRPC the header is `triton-grpc-protocol-<header>` (Triton's
    kRestrictedProtocolHeaderTemplate, src/grpc/grpc_server.h)."""

    apis: tuple[str, ...]
    header: str
    value: str

    def flags(self) -> list[str]:
        setting = f"{','.join(self.apis)}:{self.header}={self.value}"
        return [f"--http-restricted-api={setting}", f"--grpc-restricted-protocol={setting}"]


class EmbeddedServer:
    """Runs Triton on `repository` until stopped.

    Triton and its Python-backend stubs run in a process group of their own, so stopping the server
    (SIGTERM, then SIGKILL for whatever outlives the grace period) leaves no stub behind.

    `tritonserver` names another binary than the wheel's (the Triton container's
    /opt/tritonserver/bin/tritonserver), with its own `backend_directory` (default: `backends/` beside the
    binary's `bin/`); the wheel's binary gets a backend directory laid out for this interpreter.
    """

    def __init__(
        self,
        repository: Path | str,
        *,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        model_config_name: str | None = EMBEDDED_VARIANT,
        log_file: Path | None = None,
        log_verbose: int = 0,
        exit_timeout: int = 10,
        extra_args: tuple[str, ...] = (),
        tritonserver: Path | None = None,
        backend_directory: Path | None = None,
        address: str | None = None,
        metrics_address: str | None = None,
        model_control: Literal["none", "explicit"] = "none",
        restrictions: tuple[Restriction, ...] = (),
    ) -> None:
        self.repository = Path(repository).resolve()
        self.tritonserver = tritonserver
        self._backend_directory = backend_directory
        self.address = address
        """Where HTTP and gRPC listen (Triton's default: every interface); "127.0.0.1" behind a front door."""
        self.metrics_address = metrics_address
        """Where metrics listen; Triton's default is --http-address, so set it when `address` is loopback."""
        self.model_control = model_control
        self.restrictions = restrictions
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.metrics_port = metrics_port
        self.model_config_name = model_config_name
        self.log_file = log_file
        self.log_verbose = log_verbose
        self.exit_timeout = exit_timeout
        self.extra_args = extra_args
        self.shm_prefix = f"{SHM_PREFIX}{os.getpid()}_{next(_instances)}_"
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self._log: IO[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def binary(self) -> Path:
        return self.tritonserver or distribution.tritonserver_binary()

    @property
    def backend_directory(self) -> Path:
        if self._backend_directory is not None:
            return self._backend_directory
        if self.tritonserver is not None:
            return self.tritonserver.resolve().parent.parent / "backends"
        if self._workdir is None:
            raise RuntimeError("the server is not started")
        return Path(self._workdir.name) / "backends"

    def command(self) -> list[str]:
        args = [
            str(self.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={self.backend_directory}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            f"--log-verbose={self.log_verbose}",
            # A model that fails to load should fail the start, not leave a half-served ensemble.
            "--exit-on-error=true",
            "--strict-readiness=true",
            # How long Triton drains in-flight requests (and idle keep-alive connections) on SIGTERM.
            f"--exit-timeout-secs={self.exit_timeout}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
        ]
        if self.model_config_name:
            args.append(f"--model-config-name={self.model_config_name}")
        if self.address is not None:
            args += [f"--http-address={self.address}", f"--grpc-address={self.address}"]
        if self.metrics_address is not None:
            args.append(f"--metrics-address={self.metrics_address}")
        if self.model_control == "explicit":
            args += ["--model-control-mode=explicit", "--load-model=*"]
        for restriction in self.restrictions:
            args += restriction.flags()
        return [*args, *self.extra_args]

    def start(self) -> EmbeddedServer:
        if self._process is not None:
            raise RuntimeError("the server is already started")
        if not self.repository.is_dir():
            raise ServerStartError(f"no model repository at {self.repository}")
        if self.tritonserver is not None and not self.tritonserver.is_file():
            raise ServerStartError(f"no tritonserver binary at {self.tritonserver}")
        remove_orphaned_shm_regions()
        self._workdir = tempfile.TemporaryDirectory(prefix="beit-serve-")
        env = dict(os.environ)
        if self.tritonserver is None:
            distribution.prepare_backend_directory(self.backend_directory)
            env["LD_LIBRARY_PATH"] = ":".join(
                p for p in (distribution.library_path(), env.get("LD_LIBRARY_PATH")) if p
            )
        env["PATH"] = ":".join(p for p in (distribution.interpreter_bin_dir(), env.get("PATH")) if p)
        if self.log_file is not None:
            self._log = self.log_file.open("ab")
        logger.info("starting Triton: %s", " ".join(_redacted(self.command(), self.restrictions)))
        self._process = subprocess.Popen(
            self.command(),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT if self._log else None,
            start_new_session=True,
            # Triton, in a session of its own, would outlive a killed beit-serve and go on holding its ports.
            preexec_fn=_terminate_with_parent,
        )
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stubs(self) -> list[Stub]:
        """Triton's Python-backend stubs now running."""
        return [] if self._process is None else stubs_of(self._process.pid)

    def load_model(self, model: str, headers: Mapping[str, str], timeout: float = 300.0) -> None:
        """Triton's model-repository extension (explicit model control): load, or unload, one model."""
        self._repository_call(f"/v2/repository/models/{model}/load", headers, timeout)

    def unload_model(self, model: str, headers: Mapping[str, str], timeout: float = 300.0) -> None:
        self._repository_call(f"/v2/repository/models/{model}/unload", headers, timeout)

    def _repository_call(self, path: str, headers: Mapping[str, str], timeout: float) -> None:
        request = urllib.request.Request(self.http_url + path, data=b"{}", method="POST", headers={**headers})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(
                f"{path}: HTTP {error.code}: {error.read().decode(errors='replace')}"
            ) from error

    def wait_until_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                self.stop()
                raise ServerStartError(
                    f"Triton exited with code {code} before it was ready{self._log_tail()}"
                )
            if self.is_ready():
                logger.info("Triton is ready: HTTP %s, gRPC %s", self.http_url, self.grpc_url)
                return
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(f"Triton was not ready after {timeout:.0f} s{self._log_tail()}")

    def cpu_seconds(self) -> float:
        """CPU time Triton and its Python-backend stubs (its process group) have used so far: what serving
        costs, apart from whatever else shares the machine, such as a load generator."""
        if self._process is None:
            raise RuntimeError("the server is not started")
        return group_cpu_seconds(self._process.pid)

    @property
    def returncode(self) -> int | None:
        """Triton's exit code once it has exited on its own; None while it runs."""
        return None if self._process is None else self._process.poll()

    def stop(self) -> None:
        grace_period = self.exit_timeout + 10
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=grace_period)
                except subprocess.TimeoutExpired:
                    logger.warning("Triton did not stop within %.0f s; killing it", grace_period)
            # Stubs can outlive a crashed server; they share its process group.
            _signal_group(process.pid, signal.SIGKILL)
            process.wait()
            remove_shm_regions(self.shm_prefix)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def _log_tail(self, lines: int = 40) -> str:
        if self.log_file is None or not self.log_file.exists():
            return ""
        tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- Triton log (last lines) ---\n" + "\n".join(tail)

    def __enter__(self) -> EmbeddedServer:
        self.start()
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _redacted(command: list[str], restrictions: tuple[Restriction, ...]) -> list[str]:
    """The command as logged: restriction keys are secrets."""
    secrets = {restriction.value for restriction in restrictions}
    redacted = []
    for arg in command:
        for secret in secrets:
            arg = arg.replace(f"={secret}", "=***")
        redacted.append(arg)
    return redacted


def shm_regions(prefix: str = SHM_PREFIX) -> set[str]:
    """The shared-memory regions named `prefix`*; by default those of every beit-serve on this machine."""
    return {region.name for region in SHM_DIRECTORY.glob(f"{prefix}*")}


def remove_shm_regions(prefix: str) -> list[str]:
    """Unlink the shared-memory regions named `prefix`*; returns their names."""
    removed = sorted(shm_regions(prefix))
    for name in removed:
        (SHM_DIRECTORY / name).unlink(missing_ok=True)
    return removed


def remove_orphaned_shm_regions() -> None:
    """Regions of servers whose beit-serve process is gone (killed with -9, or the machine's OOM killer):
    nothing else would ever remove them."""
    owners = {name.removeprefix(SHM_PREFIX).split("_", 1)[0] for name in shm_regions()}
    for owner in owners:
        if owner.isdigit() and not Path("/proc", owner).exists():
            removed = remove_shm_regions(f"{SHM_PREFIX}{owner}_")
            logger.info("removed %d shared-memory regions left by beit-serve process %s", len(removed), owner)


def _terminate_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux prctl)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
