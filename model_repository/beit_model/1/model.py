"""BEiT on CPU inside a Python-backend model: model.onnx run by ONNX Runtime (configs/embedded.pbtxt), or
model.int8.onnx where the variant's `onnx_file` parameter names it (configs/embedded_int8.pbtxt).

The embedded Triton has no onnxruntime backend, so this model does that backend's job: every request of a
dynamic batch goes through one session run, and the outputs are split back per request.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from beit_repository import model_config
from beit_repository.names import (
    INT8_ONNX_FILE,
    NETWORK_MODEL,
    ONNX_FILE,
    ONNX_FILE_PARAMETER,
    PIXEL_VALUES,
)

Array = npt.NDArray[np.float32]
Pixels = npt.NDArray[np.uint8]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        version = os.path.join(args["model_repository"], args["model_version"])
        path = os.path.join(version, _onnx_file(parameters))
        # ONNX Runtime finds model.onnx's external data beside it (opened by path below); the build names
        # those files in the config so that a missing one is named here, not in an ONNX Runtime error.
        data_files = model_config.onnx_data_files(parameters) if os.path.basename(path) == ONNX_FILE else []
        for required in [path, *(os.path.join(version, name) for name in data_files)]:
            if not os.path.exists(required):
                quantize = " --quantize int8" if os.path.basename(required) == INT8_ONNX_FILE else ""
                raise pb_utils.TritonModelException(
                    f"{NETWORK_MODEL}: {required} is missing; "
                    f"run `beit-build --model CHECKPOINT --repository MODEL_REPOSITORY{quantize}` first"
                )
        self._session = ort.InferenceSession(
            path, sess_options=_session_options(parameters), providers=["CPUExecutionProvider"]
        )
        graph_outputs = {output.name for output in self._session.get_outputs()}
        self._outputs = [output["name"] for output in config["output"] if output["name"] in graph_outputs]
        # Fixed (non-symbolic) dims of the graph input after the batch axis, e.g. (3, 224, 224).
        self._input_dims = tuple(
            dim if isinstance(dim, int) else None for dim in self._session.get_inputs()[0].shape[1:]
        )
        self._max_engine_batch = _int_parameter(parameters, "max_engine_batch") or None

    def execute(self, requests: list[Any]) -> list[Any]:
        pixels = [pb_utils.get_input_tensor_by_name(request, PIXEL_VALUES).as_numpy() for request in requests]
        responses: list[Any] = [None] * len(requests)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, batch in enumerate(pixels):
            problem = self._shape_problem(batch)
            if problem:
                responses[index] = _error(problem)
            else:
                groups.setdefault(batch.shape[1:], []).append(index)
        for indices in groups.values():
            outputs = self._run(np.concatenate([pixels[i] for i in indices]))
            start = 0
            for index in indices:
                stop = start + len(pixels[index])
                requested = requests[index].requested_output_names()
                wanted = [name for name in requested if name in outputs] or self._outputs
                responses[index] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, outputs[name][start:stop]) for name in wanted]
                )
                start = stop
        return responses

    def _shape_problem(self, batch: Pixels) -> str | None:
        expected = self._input_dims
        if batch.ndim != 1 + len(expected) or any(
            want is not None and have != want for have, want in zip(batch.shape[1:], expected, strict=True)
        ):
            shown = ", ".join("?" if dim is None else str(dim) for dim in expected)
            return f"{PIXEL_VALUES} must be [batch, {shown}], got {list(batch.shape)}"
        return None

    def _run(self, batch: Pixels) -> dict[str, Array]:
        step = self._max_engine_batch or len(batch)
        chunks = [
            self._session.run(self._outputs, {PIXEL_VALUES: batch[start : start + step]})
            for start in range(0, len(batch), step)
        ]
        return {
            name: np.ascontiguousarray(np.concatenate([chunk[i] for chunk in chunks]))
            for i, name in enumerate(self._outputs)
        }


def _session_options(parameters: dict[str, str]) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    threads = _int_parameter(parameters, "intra_op_threads")
    if threads:
        options.intra_op_num_threads = threads
    # ONNX Runtime's idle pool threads spin for work by default; inside Triton they would burn the cores the
    # preprocessor's stub and Triton itself need between runs (README.md, "Serving overhead").
    spinning = parameters.get("intra_op_spinning", "").strip() or "1"
    if spinning not in ("0", "1"):
        raise pb_utils.TritonModelException(f"{NETWORK_MODEL}: parameter 'intra_op_spinning' must be 0 or 1")
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    return options


def _onnx_file(parameters: dict[str, str]) -> str:
    """The variant's model file (configs/embedded_int8.pbtxt names model.int8.onnx), a plain name inside the
    version directory: a path would let a config load a file from outside the repository."""
    name = parameters.get(ONNX_FILE_PARAMETER, "").strip() or ONNX_FILE
    if os.path.basename(name) != name or name in (".", ".."):
        raise pb_utils.TritonModelException(
            f"{NETWORK_MODEL}: parameter {ONNX_FILE_PARAMETER!r} must be a file name in the version "
            f"directory, not {name!r}"
        )
    return name


def _int_parameter(parameters: dict[str, str], key: str) -> int:
    """A non-negative integer parameter; absent or empty means 0 (the default)."""
    text = parameters.get(key, "").strip() or "0"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise pb_utils.TritonModelException(
            f"{NETWORK_MODEL}: parameter {key!r} must be a non-negative integer"
        )
    return value


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
