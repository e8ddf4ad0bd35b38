"""beit-gateway against the real embedded Triton server (conftest: `triton_server`, the tiny model), started
as a user starts it: both Azure ML forms, both Hugging Face forms and huggingface_hub's own client, image URLs
under the SSRF policy, auth, limits, Triton down or slow, and the operations endpoints. What the gateway
answers is compared with what Triton itself answers to raw tritonclient calls."""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import openapi_spec_validator
import pytest
import tritonclient.grpc as grpcclient
from fastapi.testclient import TestClient
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image

from beit_client import BeitClient, ServerURL
from beit_gateway import GatewaySettings, create_app
from beit_gateway._fetch import IPAddress
from beit_preprocessing import DEFAULT_MAX_PIXELS, preprocess_bytes
from beit_repository.names import CLASSIFY_MODEL, IMAGE, LOGITS, NETWORK_MODEL, ONNX_FILE, PROBABILITIES
from tests.checkpoints import save_tiny_checkpoint
from tests.conftest import free_port
from tests.gateway import ROOT, GatewayProcess, image_server, running_gateway, send
from tests.images import encode, photo, png_declaring

pytestmark = pytest.mark.server

LOCAL = "127.0.0.1/32"


def jpeg(seed: int, width: int = 96, height: int = 72) -> bytes:
    return encode(photo(width, height, seed=seed), "JPEG", quality=90)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def triton_top_k(server: Any, images: list[bytes], top_k: int) -> list[list[dict[str, Any]]]:
    """What Triton answers raw tritonclient: the `beit` ensemble's classification strings, as label/score."""
    client = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
    try:
        batch = np.array([[image] for image in images], dtype=np.object_)
        tensor = grpcclient.InferInput(IMAGE, list(batch.shape), "BYTES")
        tensor.set_data_from_numpy(batch)
        requested = grpcclient.InferRequestedOutput(PROBABILITIES, class_count=top_k)
        rows = client.infer(CLASSIFY_MODEL, [tensor], outputs=[requested]).as_numpy(PROBABILITIES)
    finally:
        client.close()
    answers = []
    for row in rows:
        fields = [entry.decode().split(":", 2) for entry in row]
        answers.append([{"label": label, "score": float(score)} for score, _, label in fields])
    return answers


# ---------------------------------------------------------------- gateways, each as its command line says


@pytest.fixture(scope="module")
def gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    with running_gateway("--triton-url", triton_server.grpc_url, log=log) as running:
        yield running


@pytest.fixture(scope="module")
def url_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Image URLs from this machine allowed (where the tests' image servers run), short URL limits."""
    log = tmp_path_factory.mktemp("url-gateway") / "gateway.log"
    options = ["--url-allow", LOCAL, "--url-timeout-s", "2", "--url-max-redirects", "2"]
    with running_gateway(
        "--triton-url", triton_server.grpc_url, *options, "--max-image-bytes", "60000", log=log
    ) as g:
        yield g


@pytest.fixture(scope="module")
def small_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A deployment with its own top k and small limits."""
    log = tmp_path_factory.mktemp("small-gateway") / "gateway.log"
    options = ["--top-k", "2", "--max-top-k", "8", "--max-body-bytes", "200000", "--max-images", "3"]
    with running_gateway("--triton-url", triton_server.grpc_url, *options, log=log) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_gateway(triton_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    log = tmp_path_factory.mktemp("keyed-gateway") / "gateway.log"
    env = {"BEIT_GATEWAY_API_KEY": "s3cret-key"}
    with running_gateway("--triton-url", triton_server.grpc_url, log=log, env=env) as running:
        yield running


def post(gateway: GatewayProcess, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{gateway.url}{path}", timeout=60, **kwargs)


def assert_image_errors(response: httpx.Response, expected: dict[int, str]) -> list[dict[str, Any]]:
    """A 400 naming exactly the images of `expected` (index -> error code), each with its reason."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_image" and body["status"] == 400
    assert {e["index"]: e["code"] for e in body["errors"]} == expected, body
    for error in body["errors"]:
        assert error["message"].startswith(f"image {error['index']}: ") and len(error["message"]) > 12
        assert error["message"] in body["error"]
    return list(body["errors"])


# ---------------------------------------------------------------- Azure ML


def test_azure_list_form_answers_one_list_per_image_in_input_order_best_first(gateway, triton_server):
    images = [jpeg(seed) for seed in range(4)]
    response = post(gateway, "/score", json={"input_data": [b64(image) for image in images]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == triton_top_k(triton_server, images, 5)
    assert all(len(row) == 5 for row in answer)
    for row in answer:
        assert [p["score"] for p in row] == sorted((p["score"] for p in row), reverse=True)
        assert all(set(p) == {"label", "score"} and p["label"].startswith("class ") for p in row)


def test_azure_split_form_answers_like_the_list_form(gateway):
    images = [b64(jpeg(seed)) for seed in (5, 6, 7)]
    listed = post(gateway, "/score", json={"input_data": images})
    split = post(
        gateway, "/score", json={"input_data": {"columns": ["image"], "index": [0, 1, 2], "data": images}}
    )
    rows = post(
        gateway,
        "/score",
        json={
            "input_data": {"columns": ["id", "image"], "data": [[i, image] for i, image in enumerate(images)]}
        },
    )
    assert listed.status_code == split.status_code == rows.status_code == 200
    assert listed.json() == split.json() == rows.json()
    assert len(split.json()) == 3


def test_azure_takes_base64_with_line_breaks_and_data_urls(gateway, triton_server):
    image = jpeg(8)
    forms = [
        b64(image),
        base64.encodebytes(image).decode(),  # what older Azure samples send: a line break every 76 characters
        f"data:image/jpeg;base64,{b64(image)}",
        "data:image/jpeg;base64," + base64.encodebytes(image).decode(),
    ]
    response = post(gateway, "/score", json={"input_data": forms})
    assert response.status_code == 200, response.text
    assert response.json() == triton_top_k(triton_server, [image] * 4, 5)


def test_a_request_of_megabytes_is_answered_like_any_other(gateway, triton_server):
    noise = np.random.default_rng(0).integers(0, 256, (700, 900, 3), dtype=np.uint8)
    large = encode(Image.fromarray(noise, "RGB"), "PNG")  # incompressible: ~1.9 MB, 2.5 MB as base64
    assert len(large) > 1 << 20
    azure = post(gateway, "/score", json={"input_data": [b64(large), b64(jpeg(30))]})
    assert azure.status_code == 200, azure.text
    assert azure.json() == triton_top_k(triton_server, [large, jpeg(30)], 5)
    hugging_face = post(gateway, "/models/beit", json={"inputs": base64.encodebytes(large).decode()})
    assert hugging_face.json() == azure.json()[0]


def test_top_k_is_5_by_default_settable_per_request_and_per_deployment(gateway, small_gateway, triton_server):
    image = jpeg(9)
    body: dict[str, Any] = {"input_data": [b64(image)]}
    assert post(gateway, "/score", json=body).json() == triton_top_k(triton_server, [image], 5)
    per_request = post(gateway, "/score", json={**body, "parameters": {"top_k": 3}}).json()
    assert per_request == triton_top_k(triton_server, [image], 3)
    assert post(gateway, "/score", json={**body, "params": {"top_k": 3}}).json() == per_request
    assert post(small_gateway, "/score", json=body).json() == triton_top_k(triton_server, [image], 2)
    assert post(small_gateway, "/score", json={**body, "parameters": {"top_k": 4}}).json() == triton_top_k(
        triton_server, [image], 4
    )
    # More than the model has labels is every label, as the Hugging Face pipeline answers.
    assert len(post(gateway, "/score", json={**body, "parameters": {"top_k": 50}}).json()[0]) == 10
    over = post(small_gateway, "/score", json={**body, "parameters": {"top_k": 9}})
    assert over.status_code == 400 and "over this deployment's limit of 8" in over.json()["error"]


def test_good_and_bad_images_in_one_azure_request_name_every_bad_one_and_the_gateway_keeps_serving(gateway):
    good = b64(jpeg(10))
    images = [
        good,
        "this is not base64!",
        b64(b"not an image at all"),  # valid base64; Triton's preprocessor refuses it
        good,
        b64(png_declaring(100_000, 100_000)),  # a decompression bomb's header
        12345,
        "",
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "file:///etc/passwd",
        b64(jpeg(11)),
    ]
    response = post(gateway, "/score", json={"input_data": images})
    errors = assert_image_errors(
        response,
        {
            1: "invalid_base64",
            2: "invalid_image",
            4: "invalid_image",
            5: "not_a_string",
            6: "empty_image",
            7: "url_refused",
            8: "unsupported_url_scheme",
        },
    )
    reasons = {error["index"]: error["message"] for error in errors}
    assert "not an image in a supported format" in reasons[2]
    assert "too many pixels" in reasons[4]
    assert "169.254.169.254 is a cloud metadata address" in reasons[7]
    assert response.json()["error"].startswith("7 of 10 images could not be classified: ")
    # The same gateway answers the good images at once, alone or together.
    again = post(gateway, "/score", json={"input_data": [good, images[9], good]})
    assert again.status_code == 200 and len(again.json()) == 3 and again.json()[0] == again.json()[2]


def test_azure_request_errors_are_json_400s_naming_the_problem(gateway):
    cases = [
        (b"{not json", "Invalid JSON"),
        (json.dumps({"inputs": ["x"]}).encode(), "input_data: Field required"),
        (json.dumps({"input_data": []}).encode(), "holds no images"),
        (
            json.dumps({"input_data": {"columns": ["picture"], "data": ["x"]}}).encode(),
            "must include 'image'",
        ),
    ]
    for body, message in cases:
        response = post(gateway, "/score", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 400, body
        assert response.json()["code"] == "bad_request" and message in response.json()["error"]


# ---------------------------------------------------------------- Hugging Face


def test_hugging_face_raw_image_body_with_or_without_a_content_type(gateway, triton_server):
    image = jpeg(12)
    expected = triton_top_k(triton_server, [image], 5)[0]
    for headers in ({"Content-Type": "image/jpeg"}, {"Content-Type": "application/octet-stream"}, {}):
        response = post(gateway, "/models/beit", content=image, headers=headers)
        assert response.status_code == 200, (headers, response.text)
        assert response.json() == expected


def test_hugging_face_json_body_with_top_k(gateway, triton_server):
    image = jpeg(13)
    response = post(gateway, "/models/beit", json={"inputs": b64(image), "parameters": {"top_k": 3}})
    assert response.status_code == 200, response.text
    assert response.json() == triton_top_k(triton_server, [image], 3)[0]
    plain = post(gateway, "/models/beit", json={"inputs": b64(image)})
    assert plain.json() == triton_top_k(triton_server, [image], 5)[0]


def check_score_functions(gateway: GatewayProcess, grpc_url: str, repository: Path, native: str) -> None:
    """Every function_to_apply, and none given (the model's own, `native`), against the logits ONNX Runtime
    computes in-process from the same pixels."""
    image = jpeg(14)
    with BeitClient(grpc_url) as client:
        info = client.model_info()
    session = ort.InferenceSession(str(repository / NETWORK_MODEL / "1" / ONNX_FILE))
    pixels = preprocess_bytes(image, info.preprocessing, max_pixels=DEFAULT_MAX_PIXELS)[np.newaxis]
    (logits,) = session.run([LOGITS], {session.get_inputs()[0].name: pixels})[0].astype(np.float64)
    order = np.argsort(-logits)[:4]
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    expected = {
        "none": logits[order],
        "sigmoid": 1 / (1 + np.exp(-logits[order])),
        "softmax": softmax[order],
    }
    expected[None] = expected[native]
    for function, scores in expected.items():
        parameters = {"top_k": 4} if function is None else {"top_k": 4, "function_to_apply": function}
        response = post(gateway, "/models/beit", json={"inputs": b64(image), "parameters": parameters})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert [p["label"] for p in answer] == [f"class {i}" for i in order], function
        # The model's own activation comes from Triton's classification strings, which carry 6 decimals.
        atol = 1e-6 if function in (None, native) else 1e-4
        np.testing.assert_allclose([p["score"] for p in answer], scores, atol=atol, err_msg=str(function))


def test_function_to_apply_gives_softmax_sigmoid_or_raw_logits_of_the_model(
    gateway, triton_server, tiny_repository
):
    check_score_functions(gateway, triton_server.grpc_url, tiny_repository, native="softmax")


@pytest.fixture(scope="module")
def multi_label(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str, Path]]:
    """A multi-label checkpoint (sigmoid head) on a Triton of its own, and a gateway in front of it."""
    from beit_build import build_repository
    from beit_serve import EmbeddedServer

    root = tmp_path_factory.mktemp("multi-label")
    repository = root / "repository"
    build_repository(save_tiny_checkpoint(root / "checkpoint", multi_label=True, seed=1), repository)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    with EmbeddedServer(repository, log_file=root / "triton.log", **ports) as server:
        with running_gateway("--triton-url", server.grpc_url, log=root / "gateway.log") as gateway:
            yield gateway, server.grpc_url, repository


def test_a_multi_label_model_answers_sigmoid_scores_unless_asked_otherwise(multi_label):
    gateway, grpc_url, repository = multi_label
    assert httpx.get(f"{gateway.url}/ready").json()["multi_label"] is True
    check_score_functions(gateway, grpc_url, repository, native="sigmoid")


def test_huggingface_hub_inference_client_classifies_through_the_gateway(gateway, triton_server, tmp_path):
    image = jpeg(15)
    path = tmp_path / "cat.jpg"
    path.write_bytes(image)
    client = InferenceClient(model=f"{gateway.url}/models/beit")
    expected = triton_top_k(triton_server, [image], 5)[0]
    for given in (image, str(path), path):  # raw bytes (no Content-Type), a file (image/jpeg) by str or Path
        answer = client.image_classification(given)
        assert [(e.label, e.score) for e in answer] == [(p["label"], p["score"]) for p in expected]
    # With parameters the client switches to the JSON form.
    top3 = client.image_classification(image, top_k=3)
    assert [(e.label, e.score) for e in top3] == [(p["label"], p["score"]) for p in expected[:3]]
    sigmoid = client.image_classification(image, top_k=2, function_to_apply="sigmoid")
    assert [e.label for e in sigmoid] == [p["label"] for p in expected[:2]]
    assert all(0.5 < e.score < 1 for e in sigmoid)
    with pytest.raises(HfHubHTTPError) as refused:
        client.image_classification(b"not an image")
    assert refused.value.response.status_code == 400
    assert "image 0: not an image in a supported format" in str(refused.value)


def test_hugging_face_route_refuses_other_models_content_types_and_bad_bodies(gateway):
    image = jpeg(16)
    other = post(gateway, "/models/bert", content=image, headers={"Content-Type": "image/jpeg"})
    assert other.status_code == 404 and other.json()["code"] == "model_not_found"
    for content_type in (
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
    ):
        response = post(gateway, "/models/beit", content=image, headers={"Content-Type": content_type})
        assert response.status_code == 415, content_type
        assert response.json()["code"] == "unsupported_media_type"
        assert content_type.split(";")[0] in response.json()["error"]
    azure = post(gateway, "/score", content=b"x", headers={"Content-Type": "text/csv"})
    assert azure.status_code == 415 and "send application/json" in azure.json()["error"]
    assert_image_errors(
        post(gateway, "/models/beit", content=b"", headers={"Content-Type": "image/png"}), {0: "empty_image"}
    )
    assert_image_errors(post(gateway, "/models/beit", json={"inputs": "%%%"}), {0: "invalid_base64"})
    assert_image_errors(post(gateway, "/models/beit", json={"inputs": ["a", "b"]}), {0: "not_a_string"})


# ---------------------------------------------------------------- limits


def test_bodies_and_image_counts_over_the_limits_are_413(small_gateway):
    big = post(
        small_gateway, "/models/beit", content=b"\xff" * 200_001, headers={"Content-Type": "image/jpeg"}
    )
    assert big.status_code == 413 and big.json()["code"] == "payload_too_large"
    assert "over the limit of 200000" in big.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it is read
        for _ in range(30):
            yield b"A" * 10_000

    streamed = post(small_gateway, "/score", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    many = post(small_gateway, "/score", json={"input_data": [b64(jpeg(17))] * 4})
    assert many.status_code == 413 and "4 images in one request, over the limit of 3" in many.json()["error"]
    assert post(small_gateway, "/score", json={"input_data": [b64(jpeg(17))] * 3}).status_code == 200


# ---------------------------------------------------------------- image URLs and SSRF


def photo_route(image: bytes):
    return lambda handler: send(handler, 200, image, Content_Type="image/jpeg")


def redirect_to(location: str):
    return lambda handler: send(handler, 302, Location=location)


def test_a_url_from_a_local_server_is_fetched_only_when_the_allowlist_allows_it(
    gateway, url_gateway, triton_server
):
    image = jpeg(18)
    with image_server({"/cat.jpg": photo_route(image)}) as server:
        url = server.url("/cat.jpg")
        refused = post(gateway, "/score", json={"input_data": [url]})
        (error,) = assert_image_errors(refused, {0: "url_refused"})
        assert "127.0.0.1 is a loopback address" in error["message"] and "--url-allow" in error["message"]
        assert server.requests == [], "a refused URL is never connected to"

        allowed = post(url_gateway, "/score", json={"input_data": [url, b64(image)]})
        assert allowed.status_code == 200, allowed.text
        expected = triton_top_k(triton_server, [image], 5)[0]
        assert allowed.json() == [expected, expected]
        hugging_face = post(url_gateway, "/models/beit", json={"inputs": url})
        assert hugging_face.json() == expected
        assert server.requests == [("/cat.jpg", f"127.0.0.1:{server.port}")] * 2


def test_redirects_are_checked_hop_by_hop_and_bounded(url_gateway):
    image = jpeg(19)
    with image_server({}) as server:
        server.routes.update(
            {
                "/cat.jpg": photo_route(image),
                "/hop": redirect_to(server.url("/cat.jpg")),
                "/metadata": redirect_to("http://169.254.169.254/latest/meta-data/"),
                "/private": redirect_to("http://10.0.0.1/internal.jpg"),
                "/ipv6-loopback": redirect_to(f"http://[::1]:{server.port}/cat.jpg"),
                "/scheme": redirect_to("file:///etc/passwd"),
                "/loop": redirect_to(server.url("/loop")),
                "/missing": lambda handler: send(handler, 404, b"gone"),
            }
        )
        paths = ("/hop", "/metadata", "/private", "/ipv6-loopback", "/scheme", "/loop", "/missing")
        response = post(url_gateway, "/score", json={"input_data": [server.url(path) for path in paths]})
        errors = assert_image_errors(
            response,
            {
                1: "url_refused",
                2: "url_refused",
                3: "url_refused",
                4: "unsupported_url_scheme",
                5: "url_fetch_failed",
                6: "url_fetch_failed",
            },
        )
        reasons = {e["index"]: e["message"] for e in errors}
        assert "169.254.169.254 is a cloud metadata address" in reasons[1]
        assert "10.0.0.1 is a private address" in reasons[2]
        assert "::1 is a loopback address" in reasons[3]
        assert "redirects more than 2 times" in reasons[5]
        assert "answered HTTP 404" in reasons[6]
        fetched = [path for path, _ in server.requests]
        assert "/cat.jpg" in fetched and fetched.count("/loop") == 3


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://localhost:{port}/cat.jpg", "localhost resolves to "),  # a DNS name for the loopback address
        ("http://127.0.0.1:{port}/cat.jpg", "127.0.0.1 is a loopback address"),
        ("http://[::1]:{port}/cat.jpg", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]:{port}/cat.jpg", "127.0.0.1 is a loopback address"),
        ("http://2130706433:{port}/cat.jpg", "127.0.0.1 is a loopback address"),  # 127.0.0.1 as one number
        ("http://0x7f.1:{port}/cat.jpg", "127.0.0.1 is a loopback address"),
        ("http://0.0.0.0:{port}/cat.jpg", "0.0.0.0 is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254 is a cloud metadata address"),
        ("http://169.254.10.10/", "169.254.10.10 is a link-local address"),
        ("http://192.168.0.1/", "192.168.0.1 is a private address"),
        ("http://172.17.0.1:8001/", "172.17.0.1 is a private address"),
        ("https://10.1.2.3/", "10.1.2.3 is a private address"),
    ],
)
def test_ssrf_private_loopback_link_local_and_metadata_addresses_are_refused_by_default(gateway, url, why):
    with image_server({"/cat.jpg": photo_route(jpeg(20))}) as server:
        response = post(gateway, "/score", json={"input_data": [url.format(port=server.port)]})
        (error,) = assert_image_errors(response, {0: "url_refused"})
        assert why in error["message"]
        assert server.requests == []


def test_url_size_and_time_limits_are_each_images_own_error(url_gateway):
    def slow(handler: Any) -> None:
        time.sleep(3)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the gateway gave up, as it should
            send(handler, 200, jpeg(21))

    def lying(handler: Any) -> None:  # declares nothing, sends too much
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(b"\xff" * 70_000)

    routes = {
        "/big.jpg": lambda h: send(h, 200, b"\xff" * 70_000),
        "/lying.jpg": lying,
        "/slow.jpg": slow,
        "/empty.jpg": lambda h: send(h, 200, b""),
        "/ok.jpg": photo_route(jpeg(22)),
    }
    with image_server(routes) as server:
        started = time.monotonic()
        response = post(url_gateway, "/score", json={"input_data": [server.url(p) for p in routes]})
        assert time.monotonic() - started < 3, "the slow URL is abandoned at --url-timeout-s"
        errors = assert_image_errors(
            response, {0: "image_too_large", 1: "image_too_large", 2: "url_timeout", 3: "empty_image"}
        )
        assert "declares 70000 bytes, over the limit of 60000" in errors[0]["message"]
        assert "longer than 2 s" in errors[2]["message"]


class FakeResolver:
    """DNS as a hostile or internal name server would answer it."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        self.asked.append(host)
        if host not in self.names:
            raise OSError(f"unknown host {host}")
        return [ipaddress.ip_address(address) for address in self.names[host]]


@pytest.fixture
def resolving_app(triton_server: Any) -> Iterator[tuple[TestClient, FakeResolver]]:
    resolver = FakeResolver(
        {
            "metadata.cloud.test": ["169.254.169.254"],
            "intranet.test": ["10.20.30.40"],
            "link-local.test": ["fe80::1"],
            "mapped.test": ["::ffff:192.168.1.10"],
            "rebinding.test": ["93.184.216.34", "127.0.0.2"],
            "images.test": ["127.0.0.1"],
        }
    )
    settings = GatewaySettings(triton_url=triton_server.grpc_url, url_allow=(ipaddress.ip_network(LOCAL),))
    with TestClient(create_app(settings, resolver=resolver)) as client:
        yield client, resolver


def test_dns_names_resolving_to_refused_addresses_are_refused(resolving_app):
    client, _ = resolving_app
    urls = [
        "http://metadata.cloud.test/latest/meta-data/",
        "http://intranet.test/cat.jpg",
        "https://link-local.test/cat.jpg",
        "http://mapped.test/cat.jpg",
        "http://rebinding.test/cat.jpg",  # one public address does not excuse a loopback one
        "http://nowhere.test/cat.jpg",
    ]
    response = client.post("/score", json={"input_data": urls})
    errors = assert_image_errors(
        response, {0: "url_refused", 1: "url_refused", 2: "url_refused", 3: "url_refused", 4: "url_refused",
                   5: "url_fetch_failed"}
    )  # fmt: skip
    reasons = [e["message"] for e in errors]
    assert "metadata.cloud.test resolves to 169.254.169.254 is a cloud metadata address" in reasons[0]
    assert "intranet.test resolves to 10.20.30.40 is a private address" in reasons[1]
    assert "fe80::1 is a link-local address" in reasons[2]
    assert "192.168.1.10 is a private address" in reasons[3]
    assert "127.0.0.2 is a loopback address" in reasons[4]
    assert "cannot resolve nowhere.test" in reasons[5]


def test_the_connection_goes_to_the_address_that_was_checked_with_the_name_as_host(
    resolving_app, triton_server
):
    client, resolver = resolving_app
    image = jpeg(23)
    with image_server({"/cat.jpg": photo_route(image)}) as server:
        # images.test exists only in the fake resolver: the fetch can only have used the checked address.
        response = client.post("/score", json={"input_data": [f"http://images.test:{server.port}/cat.jpg"]})
        assert response.status_code == 200, response.text
        assert response.json() == triton_top_k(triton_server, [image], 5)
        assert server.requests == [("/cat.jpg", f"images.test:{server.port}")]
        assert resolver.asked == ["images.test"]


# ---------------------------------------------------------------- auth


def test_an_api_key_is_required_when_set_and_operations_stay_open(keyed_gateway, triton_server):
    image = jpeg(24)
    body = {"input_data": [b64(image)]}
    missing = post(keyed_gateway, "/score", json=body)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["code"] == "unauthorized"
    wrong = post(keyed_gateway, "/score", json=body, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]
    basic = post(
        keyed_gateway, "/models/beit", content=image, headers={"Authorization": "Basic czNjcmV0LWtleQ=="}
    )
    assert basic.status_code == 401
    right = post(keyed_gateway, "/score", json=body, headers={"Authorization": "Bearer s3cret-key"})
    assert right.status_code == 200 and right.json() == triton_top_k(triton_server, [image], 5)
    # Checked before the body is read: an unauthenticated caller cannot make the gateway read 40 MB.
    assert post(keyed_gateway, "/models/beit", content=b"\xff" * (40 << 20)).status_code == 401
    client = InferenceClient(model=f"{keyed_gateway.url}/models/beit", token="s3cret-key")
    assert [e.label for e in client.image_classification(image)] == [p["label"] for p in right.json()[0]]
    with pytest.raises(HfHubHTTPError) as refused:
        InferenceClient(model=f"{keyed_gateway.url}/models/beit", token="wrong").image_classification(image)
    assert refused.value.response.status_code == 401
    for path in ("/health", "/ready", "/metrics", "/docs", "/openapi.json"):
        assert httpx.get(f"{keyed_gateway.url}{path}").status_code == 200, path


# ---------------------------------------------------------------- Triton down, Triton slow


def test_triton_down_is_503_with_retry_after_and_the_gateway_stays_live(triton_server, tmp_path):
    dead = f"grpc://127.0.0.1:{free_port()}"
    with running_gateway("--triton-url", dead, "--retry-after-s", "7", log=tmp_path / "gateway.log") as down:
        for path, kwargs in (
            ("/score", {"json": {"input_data": [b64(jpeg(25))]}}),
            ("/models/beit", {"content": jpeg(25), "headers": {"Content-Type": "image/jpeg"}}),
        ):
            response = post(down, path, **kwargs)
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "7"
            assert response.json()["code"] == "triton_unavailable"
        ready = httpx.get(f"{down.url}/ready")
        assert ready.status_code == 503 and ready.headers["Retry-After"] == "7"
        assert httpx.get(f"{down.url}/health").status_code == 200
        # Bad input is still the caller's 400, Triton or not.
        assert post(down, "/score", json={"input_data": ["%%%"]}).status_code == 400


def test_triton_not_answering_in_time_is_504(triton_server, tmp_path):
    log = tmp_path / "gateway.log"
    with running_gateway(
        "--triton-url", triton_server.grpc_url, "--triton-timeout-s", "0.001", log=log
    ) as slow:
        response = post(slow, "/score", json={"input_data": [b64(jpeg(26, 640, 480))]})
        assert response.status_code == 504, response.text
        assert response.json()["code"] == "triton_timeout"
        assert httpx.get(f"{slow.url}/health").status_code == 200


# ---------------------------------------------------------------- operations


def test_health_and_ready_describe_the_gateway_and_the_served_model(gateway, triton_server, tiny_checkpoint):
    assert httpx.get(f"{gateway.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "triton_url": str(ServerURL.parse(triton_server.grpc_url)),
        "model": "beit",
        "checkpoint": str(tiny_checkpoint),
        "labels": 10,
        "multi_label": False,
    }


def metric(text: str, name: str, **labels: str) -> float:
    selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        series_name, _, series_labels = series.partition("{")
        found = dict(re.findall(r'(\w+)="([^"]*)"', series_labels))
        if series_name == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    raise AssertionError(f"no {name}{{{selector}}} in the metrics")


def test_prometheus_metrics_count_requests_latency_errors_by_status_and_images(small_gateway):
    def scrape() -> str:
        response = httpx.get(f"{small_gateway.url}/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        return response.text

    before = scrape()
    good = b64(jpeg(27))
    assert post(small_gateway, "/score", json={"input_data": [good, good]}).status_code == 200
    assert post(small_gateway, "/score", json={"input_data": [good, "%%%"]}).status_code == 400
    assert (
        post(small_gateway, "/models/beit", content=b"x", headers={"Content-Type": "text/plain"}).status_code
        == 415
    )
    after = scrape()

    def grew(name: str, **labels: str) -> float:
        try:
            old = metric(before, name, **labels)
        except AssertionError:
            old = 0.0
        return metric(after, name, **labels) - old

    assert grew("beit_gateway_requests_total", endpoint="/score", method="POST", status="200") == 1
    assert grew("beit_gateway_requests_total", endpoint="/score", method="POST", status="400") == 1
    assert grew("beit_gateway_request_duration_seconds_count", endpoint="/score") == 2
    assert grew("beit_gateway_request_duration_seconds_bucket", endpoint="/score", le="+Inf") == 2
    assert grew("beit_gateway_errors_total", endpoint="/score", status="400", code="invalid_image") == 1
    assert (
        grew(
            "beit_gateway_errors_total",
            endpoint="/models/{model}",
            status="415",
            code="unsupported_media_type",
        )
        == 1
    )
    assert grew("beit_gateway_images_total", endpoint="/score", outcome="classified") == 3
    assert grew("beit_gateway_images_total", endpoint="/score", outcome="refused") == 1
    assert grew("beit_gateway_triton_duration_seconds_count") == 2
    assert metric(after, "beit_gateway_requests_in_flight") == 1  # the scrape itself


def test_openapi_docs_describe_both_contracts(gateway):
    docs = httpx.get(f"{gateway.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower() and "/openapi.json" in docs.text
    spec = httpx.get(f"{gateway.url}/openapi.json").json()
    openapi_spec_validator.validate(spec)
    assert {"/score", "/models/{model}", "/health", "/ready", "/metrics"} <= set(spec["paths"])
    score = spec["paths"]["/score"]["post"]
    assert score["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AzureRequest"
    }
    hf = spec["paths"]["/models/{model}"]["post"]
    assert {"image/*", "application/octet-stream", "application/json"} == set(hf["requestBody"]["content"])
    assert {"400", "401", "413", "415", "503", "504"} <= set(score["responses"])
    schemas = spec["components"]["schemas"]
    assert {"AzureRequest", "AzureSplitInput", "HuggingFaceRequest", "Parameters", "ScoredLabel"} <= set(
        schemas
    )
    assert set(schemas["AzureRequest"]["properties"]) == {"input_data", "parameters"}


def test_logs_are_one_json_object_per_line_with_the_request_id(gateway):
    response = post(
        gateway, "/score", json={"input_data": ["%%%"]}, headers={"X-Request-ID": "trace-abc-123"}
    )
    assert (
        response.headers["x-request-id"] == "trace-abc-123"
        and response.json()["request_id"] == "trace-abc-123"
    )
    generated = post(gateway, "/models/beit", content=jpeg(28), headers={"Content-Type": "image/jpeg"})
    request_id = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in gateway.log_records()]
        by_id = {r.get("request_id"): r for r in records if r.get("message") == "request"}
        if {"trace-abc-123", request_id} <= set(by_id):
            break
        time.sleep(0.1)
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    refused = by_id["trace-abc-123"]
    assert (refused["status"], refused["path"], refused["error_code"], refused["images"]) == (
        400,
        "/score",
        "invalid_image",
        1,
    )
    answered = by_id[request_id]
    assert (answered["status"], answered["method"], answered["images"]) == (200, "POST", 1)
    assert answered["duration_ms"] > 0 and answered["level"] == "info"


def readme_gateway_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## REST gateway: `beit-gateway`")
    return text[start : text.index("\n## ", start + 1)]


def test_the_readme_curl_examples_work_as_written(gateway, tmp_path, triton_server):
    (tmp_path / "cat.jpg").write_bytes(jpeg(29))
    blocks = re.findall(r"```bash\n(.*?)```", readme_gateway_section(), re.DOTALL)
    commands = [block for block in blocks if block.lstrip().startswith("curl")]
    assert len(commands) >= 5, "the README shows curl for both contracts and the operations"
    port = gateway.url.rsplit(":", 1)[1]
    expected = triton_top_k(triton_server, [jpeg(29)], 5)[0]
    for command in commands:
        script = command.replace("localhost:8080", f"127.0.0.1:{port}")
        result = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (command, result.stderr)
        answer = json.loads(result.stdout)  # one JSON answer per command, never an error
        if isinstance(answer, dict):
            assert answer.get("status") == "ready", (command, answer)
        elif isinstance(answer[0], list):
            assert [row[0]["label"] for row in answer] == [expected[0]["label"]] * len(answer), command
        else:
            assert answer[0]["label"] == expected[0]["label"], command
