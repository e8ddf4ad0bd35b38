"""What must hold before beit-serve starts Triton: a built repository and free ports. Each failure is one
line saying what was found and what to do, instead of an error buried in Triton's log."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

from beit_repository import model_config
from beit_repository.names import (
    CONFIG_FILE,
    INT8_ONNX_FILE,
    MODEL_VERSION,
    NETWORK_MODEL,
    ONNX_FILE,
    ONNX_FILE_PARAMETER,
    PLAN_FILE,
    VARIANTS_DIRECTORY,
)

TENSORRT_BACKEND = "tensorrt"


class PreflightError(RuntimeError):
    """beit-serve cannot start; the message is the one line to show."""


def check_repository(repository: Path, variant: str | None) -> None:
    """`repository` is what beit-build writes, with the network file the `variant` of beit_model loads."""
    build = f"build it first: make build, or beit-build --model CHECKPOINT --repository {repository}"
    if not repository.is_dir():
        raise PreflightError(f"no model repository at {repository}: {build}")
    network = repository / NETWORK_MODEL
    config_path = network / VARIANTS_DIRECTORY / f"{variant}.pbtxt"
    if not config_path.is_file():
        config_path = network / CONFIG_FILE
    if not config_path.is_file():
        raise PreflightError(f"{repository} is not a model repository (no {config_path}): {build}")
    config = model_config.read(config_path)
    parameters = model_config.parameters(config)
    if "checkpoint" not in parameters:
        raise PreflightError(
            f"{repository} holds the unbuilt template (no checkpoint in {config_path}): {build}"
        )
    file = network_file(config)
    version = network / MODEL_VERSION
    # ONNX Runtime reads the external data beside model.onnx only when the session is created, in a
    # backend's log; a copy of the repository that left the data file behind is caught here instead.
    data_files = model_config.onnx_data_files(parameters) if file == ONNX_FILE else []
    hints = {
        PLAN_FILE: "docker compose run --rm tensorrt builds the plan",
        INT8_ONNX_FILE: f"build it with: beit-build --model CHECKPOINT --repository {repository} "
        "--quantize int8",
    }
    for artifact in [version / file, *(version / name for name in data_files)]:
        if not artifact.is_file():
            raise PreflightError(
                f"{repository} has no {artifact.relative_to(repository)}: {hints.get(artifact.name, build)}"
            )


def network_file(config: model_config.ModelConfig) -> str:
    """The file in beit_model's version directory that this config loads: a TensorRT plan, or the ONNX file
    its `onnx_file` parameter names (the int8 variant's), else model.onnx."""
    if config.backend == TENSORRT_BACKEND:
        return PLAN_FILE
    return model_config.parameters(config).get(ONNX_FILE_PARAMETER) or ONNX_FILE


def check_ports_free(address: str, ports: Mapping[str, int]) -> None:
    """Each of `ports` (option name -> port) can be bound on `address` now: another server holding one
    would otherwise answer this one's clients, and its health checks, while this one fails to start."""
    for option, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            # As the servers themselves bind: a port in TIME_WAIT after a previous run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError as error:
                raise PreflightError(
                    f"port {port} on {address} is in use ({error.strerror}): another server is running "
                    f"there; stop it, or choose another port with --{option}"
                ) from error
