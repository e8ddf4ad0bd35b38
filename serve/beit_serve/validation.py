"""Structural checks of inference requests, done by the front door before Triton sees them.

Triton 2.51 answers a request it cannot parse with 500 / INTERNAL, as if the server were at fault: a body
that is not JSON ("failed to parse the request JSON buffer"), a BYTES element that is not a string, a shape
that is not an array, a `classification` that is not an unsigned integer (its JSON reader returns
TRITONSERVER_ERROR_INTERNAL for every type mismatch), and on gRPC a message that is not the method's
protobuf. Measured by `python -m loadtest.fuzz`. These checks refuse exactly those with 400 /
INVALID_ARGUMENT and a message naming the field; everything Triton itself validates (datatypes against the
model, shapes, batch sizes, unknown models and outputs) is left to it.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import message_factory
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

INFER_HEADER_LENGTH = "Inference-Header-Content-Length"
MAX_CLASS_COUNT = 2**31 - 1

# KServe v2 / Triton parameters with a fixed JSON type (docs/protocol/extension_*.md).
_UNSIGNED_PARAMETERS = frozenset(
    {
        "classification",
        "binary_data_size",
        "shared_memory_byte_size",
        "shared_memory_offset",
        "priority",
        "timeout",
    }
)
_BOOL_PARAMETERS = frozenset({"binary_data", "binary_data_output", "sequence_start", "sequence_end"})
_STRING_PARAMETERS = frozenset({"shared_memory_region"})
# A JSON number out of its datatype's range would be wrapped into it (PIXEL_VALUES 256 read as 0).
_INTEGER_RANGES = {
    **{f"UINT{bits}": (0, 2**bits - 1) for bits in (8, 16, 32, 64)},
    **{f"INT{bits}": (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) for bits in (8, 16, 32, 64)},
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parameters_problem(where: str, parameters: Any) -> str | None:
    if not isinstance(parameters, dict):
        return f"{where}.parameters must be an object"
    for key, value in parameters.items():
        if key in _UNSIGNED_PARAMETERS and not (_is_int(value) and 0 <= value <= MAX_CLASS_COUNT):
            return (
                f"{where}.parameters.{key} must be an integer from 0 to {MAX_CLASS_COUNT}, not {value!r:.40}"
            )
        if key in _BOOL_PARAMETERS and not isinstance(value, bool):
            return f"{where}.parameters.{key} must be true or false, not {value!r:.40}"
        if key in _STRING_PARAMETERS and not isinstance(value, str):
            return f"{where}.parameters.{key} must be a string"
    return None


def _leaves(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [leaf for item in data for leaf in _leaves(item)]
    return [data]


def _tensor_problem(where: str, tensor: Any, *, is_input: bool) -> str | None:
    if not isinstance(tensor, dict):
        return f"{where} must be an object"
    if not isinstance(tensor.get("name"), str):
        return f"{where}.name must be a string"
    if "parameters" in tensor and (problem := _parameters_problem(where, tensor["parameters"])):
        return problem
    if not is_input:
        return None
    if not isinstance(tensor.get("datatype"), str):
        return f"{where}.datatype must be a string"
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(_is_int(dim) and dim >= 0 for dim in shape):
        return f"{where}.shape must be an array of non-negative integers"
    if "data" in tensor:
        leaves = _leaves(tensor["data"])
        if tensor["datatype"] == "BYTES" and not all(isinstance(leaf, str) for leaf in leaves):
            return f"{where}.data: BYTES elements must be strings (base64 for binary content)"
        if tensor["datatype"] == "BOOL" and not all(isinstance(leaf, bool) for leaf in leaves):
            return f"{where}.data: BOOL elements must be true or false"
        datatype = tensor["datatype"]
        if datatype in _INTEGER_RANGES:
            low, high = _INTEGER_RANGES[datatype]
            if not all(_is_int(leaf) and low <= leaf <= high for leaf in leaves):
                return f"{where}.data: {datatype} elements must be integers from {low} to {high}"
        if datatype.startswith(("FP", "BF")) and not all(
            isinstance(leaf, (int, float)) and not isinstance(leaf, bool) for leaf in leaves
        ):
            return f"{where}.data: {datatype} elements must be numbers"
    return None


def infer_json_problem(document: Any) -> str | None:
    """What is structurally wrong with a KServe v2 inference request, or None."""
    if not isinstance(document, dict):
        return "the request must be a JSON object"
    if "id" in document and not isinstance(document["id"], str):
        return "id must be a string"
    if "parameters" in document and (problem := _parameters_problem("request", document["parameters"])):
        return problem
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return "inputs must be a non-empty array"
    for index, tensor in enumerate(inputs):
        if problem := _tensor_problem(f"inputs[{index}]", tensor, is_input=True):
            return problem
    outputs = document.get("outputs", [])
    if not isinstance(outputs, list):
        return "outputs must be an array"
    for index, tensor in enumerate(outputs):
        if problem := _tensor_problem(f"outputs[{index}]", tensor, is_input=False):
            return problem
    return None


def http_infer_problem(body: bytes, header_length: str | None) -> str | None:
    """What is wrong with an HTTP inference request body, or None. With binary tensors the JSON part is the
    first `Inference-Header-Content-Length` bytes."""
    json_part = body
    if header_length is not None:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            return (
                f"{INFER_HEADER_LENGTH} must be a byte count within the {len(body)}-byte body, "
                f"not {header_length[:40]!r}"
            )
        json_part = body[: int(header_length)]
    try:
        document = json.loads(json_part)
    except (ValueError, RecursionError) as error:
        return f"the request is not valid JSON: {str(error)[:120]}"
    return infer_json_problem(document)


def _request_types() -> dict[str, Any]:
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    return {
        f"/{service.full_name}/{method.name}": message_factory.GetMessageClass(method.input_type)
        for method in service.methods
    }


GRPC_REQUEST_TYPES = _request_types()


def grpc_request_problem(method: str, request: bytes) -> str | None:
    """Whether `request` decodes as the protobuf that `method` takes; None for methods not Triton's."""
    request_type = GRPC_REQUEST_TYPES.get(method)
    if request_type is None:
        return None
    try:
        request_type.FromString(request)
    except DecodeError as error:
        return f"the request is not a valid {request_type.DESCRIPTOR.name} protobuf: {error}"
    return None
