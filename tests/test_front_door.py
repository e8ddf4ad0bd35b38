"""beit-serve's pieces that need no server: the front door's request checks, its serving state, Triton's
restriction flags, and the soak's arithmetic."""

from __future__ import annotations

import json
import threading
import time

import pytest
from tritonclient.grpc import service_pb2

from beit_serve.front_door import GRPC_API_GROUPS, ServingState, grpc_methods
from beit_serve.server import Restriction, _redacted
from beit_serve.validation import GRPC_REQUEST_TYPES, grpc_request_problem, http_infer_problem
from loadtest.processes import Sample
from loadtest.soak import latency_windows, rss_trend

GOOD = {
    "id": "42",
    "inputs": [{"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES", "data": ["aGVsbG8="]}],
    "outputs": [{"name": "PROBABILITIES", "parameters": {"classification": 5, "binary_data": False}}],
}


def body(**changes: object) -> bytes:
    request = json.loads(json.dumps(GOOD))
    for path, value in changes.items():
        target = request
        *parents, leaf = path.split("__")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[leaf] = value
    return json.dumps(request).encode()


def test_a_well_formed_request_passes_as_json_and_with_binary_tensors() -> None:
    assert http_infer_problem(body(), None) is None
    header = body(
        inputs=[
            {"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}
        ]
    )
    assert http_infer_problem(header + b"\x05\0\0\0hello", str(len(header))) is None
    numbers = body(inputs=[{"name": "PIXEL_VALUES", "shape": [1, 2], "datatype": "FP32", "data": [[0.5, 1]]}])
    assert http_infer_problem(numbers, None) is None
    pixels = body(inputs=[{"name": "PIXEL_VALUES", "shape": [1, 2], "datatype": "UINT8", "data": [[0, 255]]}])
    assert http_infer_problem(pixels, None) is None


@pytest.mark.parametrize(
    ("request_body", "header_length", "problem"),
    [
        (b'{"inputs": [', None, "not valid JSON"),
        (b"\x00\x01", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (body(id=7), None, "id must be a string"),
        (body(inputs=[]), None, "inputs must be a non-empty array"),
        (body(inputs__0__shape=[-1, 1]), None, "shape must be an array of non-negative integers"),
        (body(inputs__0__shape="x"), None, "shape must be an array of non-negative integers"),
        (body(inputs__0__data=[12]), None, "BYTES elements must be strings"),
        (body(inputs__0__datatype="FP32", inputs__0__data=["x"]), None, "FP32 elements must be numbers"),
        (body(inputs__0__datatype="INT64", inputs__0__data=[1.5]), None, "INT64 elements must be integers"),
        (
            body(inputs__0__datatype="UINT8", inputs__0__data=[-1]),
            None,
            "UINT8 elements must be integers from 0",
        ),
        (body(inputs__0__datatype="UINT8", inputs__0__data=[[0, 256]]), None, "integers from 0 to 255"),
        (body(inputs__0__datatype="INT8", inputs__0__data=[-129]), None, "integers from -128 to 127"),
        (body(outputs__0__parameters={"classification": "many"}), None, "classification must be an integer"),
        (body(outputs__0__parameters={"classification": -1}), None, "classification must be an integer"),
        (body(outputs__0__parameters={"classification": 2**40}), None, "classification must be an integer"),
        (body(outputs__0__parameters={"binary_data": 1}), None, "binary_data must be true or false"),
        (body(), "abc", "Inference-Header-Content-Length must be a byte count"),
        (body(), "999999", "Inference-Header-Content-Length must be a byte count"),
        (body(), "20", "not valid JSON"),
    ],
)
def test_requests_triton_would_answer_with_500_are_refused_naming_the_field(
    request_body: bytes, header_length: str | None, problem: str
) -> None:
    found = http_infer_problem(request_body, header_length)
    assert found is not None and problem in found


def test_only_undecodable_grpc_messages_are_refused_and_only_for_tritons_methods() -> None:
    method = "/inference.GRPCInferenceService/ModelInfer"
    good = service_pb2.ModelInferRequest(model_name="beit").SerializeToString()
    assert grpc_request_problem(method, good) is None
    problem = grpc_request_problem(method, b"\xff\xff\xff\xff")
    assert problem is not None and "not a valid ModelInferRequest protobuf" in problem
    assert grpc_request_problem("/grpc.health.v1.Health/Check", b"\xff\xff") is None
    # Every method of Triton's service has its request type and belongs to one restricted API group.
    grouped = {
        f"/inference.GRPCInferenceService/{m}" for methods in GRPC_API_GROUPS.values() for m in methods
    }
    assert set(GRPC_REQUEST_TYPES) == grouped


def test_restrictions_become_both_of_tritons_flags_and_stay_out_of_the_log() -> None:
    restriction = Restriction(("model-config", "statistics"), "beit-key", "s3cret")
    assert restriction.flags() == [
        "--http-restricted-api=model-config,statistics:beit-key=s3cret",
        "--grpc-restricted-protocol=model-config,statistics:beit-key=s3cret",
    ]
    assert "s3cret" not in " ".join(_redacted(["tritonserver", *restriction.flags()], (restriction,)))
    assert grpc_methods(restriction) == {
        "/inference.GRPCInferenceService/ModelConfig",
        "/inference.GRPCInferenceService/ModelStatistics",
    }


def test_the_serving_state_refuses_until_served_and_waits_for_requests_in_flight() -> None:
    state = ServingState()
    assert state.refusal == "the server is starting"
    state.serve()
    assert state.refusal is None
    state.enter()
    state.refuse("the server is shutting down")
    assert state.wait_idle(0.05) is False
    threading.Timer(0.1, state.leave).start()
    started = time.monotonic()
    assert state.wait_idle(5) is True and time.monotonic() - started < 2
    assert state.in_flight == 0


def _sample(t: float, rss_mb: float) -> Sample:
    return Sample(t, int(rss_mb * 2**20), 0, 0, 0, 0, 0, ())


def test_rss_growth_compares_the_last_window_with_the_one_after_the_first() -> None:
    # Warm-up in the first minute, then flat with noise: no growth.
    samples = [_sample(t, 100 if t < 60 else 200 + (t % 4)) for t in range(0, 600, 2)]
    trend = rss_trend(samples, window_s=60, hold_s=600)
    assert abs(trend.growth) < 0.01 and abs(trend.slope_mb_per_min) < 0.1
    leaking = [_sample(t, 200 + t / 10) for t in range(0, 600, 2)]
    trend = rss_trend(leaking, window_s=60, hold_s=600)
    assert trend.growth > 0.2 and trend.slope_mb_per_min == pytest.approx(6.0)


def test_latency_windows_cover_the_hold_with_their_own_percentiles() -> None:
    seconds = {
        str(s): {"requests": 10, "failures": 0, "times": {"10": 9, "100" if s < 5 else "20": 1}}
        for s in range(10)
    }
    windows = latency_windows({"seconds": seconds}, window_s=5, hold_s=10)
    assert [(w["start_s"], w["end_s"], w["requests"]) for w in windows] == [(0, 5, 50), (5, 10, 50)]
    assert (windows[0]["p99_ms"], windows[1]["p99_ms"]) == (100.0, 20.0)
