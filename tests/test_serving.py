"""End to end on the real embedded Triton server: the `beit` ensemble against the Hugging Face reference."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from transformers import AutoModelForImageClassification, BeitImageProcessorPil
from transformers.image_utils import load_image
from tritonclient.utils import InferenceServerException

from loadtest.processes import minor_page_faults
from tests.images import encode, photo, varied_images

pytestmark = pytest.mark.server

TOP_K = 5


def hugging_face_reference(checkpoint: Path):
    """What a user gets from the checkpoint in-process: its own processor, the PyTorch model, softmax."""
    processor = BeitImageProcessorPil.from_pretrained(checkpoint)
    model = AutoModelForImageClassification.from_pretrained(checkpoint).eval()

    def probabilities(data: bytes) -> np.ndarray:
        image = load_image(Image.open(io.BytesIO(data)))
        pixels = processor(images=image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return torch.softmax(model(pixel_values=pixels).logits, -1)[0].numpy()

    return probabilities


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path):
    return hugging_face_reference(tiny_checkpoint)


def client_for(server, protocol: str):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    return grpcclient, grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))


def classify(
    server, protocol: str, images: list[bytes], top_k: int = TOP_K
) -> list[list[tuple[float, int, str]]]:
    module, client = client_for(server, protocol)
    batch = np.array([[data] for data in images], dtype=np.object_)
    image_input = module.InferInput("IMAGE", list(batch.shape), "BYTES")
    image_input.set_data_from_numpy(batch)
    output = module.InferRequestedOutput("PROBABILITIES", class_count=top_k)
    result = client.infer("beit", [image_input], outputs=[output]).as_numpy("PROBABILITIES")
    return [[parse_class(entry) for entry in row] for row in result]


def parse_class(entry: bytes) -> tuple[float, int, str]:
    score, index, label = entry.decode().split(":", 2)
    return float(score), int(index), label


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_every_image_kind_matches_the_hugging_face_reference(triton_server, reference, protocol):
    for name, data in varied_images().items():
        (served,) = classify(triton_server, protocol, [data])
        expected = reference(data)
        expected_top = np.argsort(-expected)[:TOP_K]
        assert [index for _, index, _ in served] == expected_top.tolist(), name
        np.testing.assert_allclose(
            [score for score, _, _ in served], expected[expected_top], atol=1e-4, err_msg=name
        )
        assert [label for _, _, label in served] == [f"class {i}" for i in expected_top], name


def test_a_request_with_several_images_answers_each_in_order(triton_server, reference):
    images = list(varied_images().values())[:6]
    served = classify(triton_server, "grpc", images)
    for data, row in zip(images, served, strict=True):
        assert row[0][1] == int(np.argmax(reference(data)))


def test_concurrent_requests_are_batched_and_answer_what_single_requests_answer(triton_server):
    images = [encode(photo(200 + 7 * i, 150 + 5 * i, seed=i), "JPEG") for i in range(16)]
    singles = [classify(triton_server, "http", [data])[0] for data in images]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        concurrent_answers = list(pool.map(lambda data: classify(triton_server, "grpc", [data])[0], images))
    for single, together in zip(singles, concurrent_answers, strict=True):
        assert [index for _, index, _ in single] == [index for _, index, _ in together]
        np.testing.assert_allclose([s for s, _, _ in single], [s for s, _, _ in together], atol=1e-5)
    _, client = client_for(triton_server, "grpc")
    for model in ("beit_preprocess", "beit_model"):
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        batch_sizes = [int(entry["batch_size"]) for entry in stats["batch_stats"]]
        assert max(batch_sizes) > 1, f"{model} never ran a batch larger than 1: {batch_sizes}"


BAD_IMAGES = {
    "empty": b"",
    "not an image": b"this is a text file, not a picture" * 10,
    "truncated jpeg": encode(photo(320, 240), "JPEG")[:2000],
    "truncated png": encode(photo(320, 240), "PNG")[:3000],
    "decompression bomb": encode(Image.new("L", (9000, 5000)), "PNG"),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_images_fail_alone_in_a_shared_batch_and_the_server_stays_ready(
    triton_server, reference, protocol
):
    good = [encode(photo(300, 200, seed=i), "JPEG") for i in range(6)]
    requests = [(name, data) for name, data in BAD_IMAGES.items()] + [
        (f"good {i}", d) for i, d in enumerate(good)
    ]

    def send(item):
        name, data = item
        try:
            return name, classify(triton_server, protocol, [data])[0]
        except InferenceServerException as error:
            return name, error

    with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
        answers = dict(pool.map(send, requests))
    for name in BAD_IMAGES:
        error = answers[name]
        assert isinstance(error, InferenceServerException), f"{name} was answered: {error}"
        assert error.status() in ("400", "StatusCode.INVALID_ARGUMENT"), (
            name,
            error.status(),
            error.message(),
        )
    for i, data in enumerate(good):
        row = answers[f"good {i}"]
        assert not isinstance(row, Exception), row
        assert row[0][1] == int(np.argmax(reference(data)))
    _, client = client_for(triton_server, protocol)
    assert client.is_server_ready()
    assert client.is_model_ready("beit")


def test_kserve_v2_json_with_a_base64_image_over_plain_http(triton_server, reference):
    data = encode(photo(256, 256, seed=7), "PNG")
    body = {
        "inputs": [
            {"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}
        ],
        "outputs": [{"name": "PROBABILITIES", "parameters": {"classification": 3}}],
    }
    request = urllib.request.Request(
        f"{triton_server.http_url}/v2/models/beit/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    (output,) = answer["outputs"]
    top = [parse_class(entry.encode()) for entry in output["data"]]
    assert [index for _, index, _ in top] == np.argsort(-reference(data))[:3].tolist()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_stock_ensemble_image_client_request_shape_works_unchanged(triton_server, protocol):
    """NVIDIA's ensemble_image_client.py: raw file bytes as BYTES [batch, 1], class_count on every output,
    each answer split on ':' into score, index and label."""
    module, client = client_for(triton_server, protocol)
    metadata = client.get_model_metadata("beit")
    outputs = (
        [o.name for o in metadata.outputs] if protocol == "grpc" else [o["name"] for o in metadata["outputs"]]
    )
    input_name = metadata.inputs[0].name if protocol == "grpc" else metadata["inputs"][0]["name"]
    files = [encode(photo(400, 300, seed=i), "JPEG") for i in range(3)]
    batch = np.stack([np.array([data], dtype=bytes) for data in files], axis=0)
    image_input = module.InferInput(input_name, batch.shape, "BYTES")
    image_input.set_data_from_numpy(batch)
    requested = [module.InferRequestedOutput(name, class_count=1) for name in outputs]
    result = client.infer("beit", [image_input], outputs=requested)
    for name in outputs:
        rows = result.as_numpy(name)
        assert len(rows) == len(files)
        for row in rows:
            score, index, label = row[0].decode().split(":")
            assert 0.0 <= float(score) <= 1.0 and label


def test_embeddings_are_the_reference_pooled_output(triton_server, tiny_checkpoint):
    data = encode(photo(224, 224, seed=11), "PNG")
    module, client = client_for(triton_server, "grpc")
    image_input = module.InferInput("IMAGE", [1, 1], "BYTES")
    image_input.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    embedding = client.infer("beit_embedding", [image_input]).as_numpy("EMBEDDING")
    processor = BeitImageProcessorPil.from_pretrained(tiny_checkpoint)
    model = AutoModelForImageClassification.from_pretrained(tiny_checkpoint).eval()
    pixels = processor(images=load_image(Image.open(io.BytesIO(data))), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = model.base_model(pixel_values=pixels).pooler_output.numpy()
    np.testing.assert_allclose(embedding, expected, atol=1e-4)


def test_a_384_pixel_checkpoint_is_served_at_its_own_resolution(tiny_384_checkpoint, tiny_384_repository):
    from beit_serve import EmbeddedServer
    from tests.conftest import free_port

    reference = hugging_face_reference(tiny_384_checkpoint)
    server = EmbeddedServer(
        tiny_384_repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    images = [encode(photo(500, 400, seed=7), "JPEG"), encode(photo(200, 300, seed=8), "PNG")]
    with server:
        served = classify(server, "grpc", images, top_k=5)
    for data, answer in zip(images, served, strict=True):
        expected = reference(data)
        assert [index for _, index, _ in answer] == np.argsort(-expected)[:5].tolist()
        np.testing.assert_allclose([score for score, _, _ in answer], np.sort(expected)[::-1][:5], atol=1e-4)


def test_the_preprocessor_reuses_its_image_memory_instead_of_faulting_it_in_per_image(triton_server):
    """glibc handed each decoded photo's buffer back to the kernel, and the next image page-faulted it in
    again: about 280 faults per 640x480 JPEG in the stub (README.md, "Serving overhead")."""
    images = [encode(photo(640, 480, seed=i), "JPEG") for i in range(8)]
    stubs = [stub.pid for stub in triton_server.stubs() if stub.model == "beit_preprocess"]
    assert stubs, "no preprocessor stub found"
    # Sequential requests, each stub's share warmed twice over before counting.
    for data in images * 4:
        classify(triton_server, "grpc", [data])
    before = sum(minor_page_faults(pid) for pid in stubs)
    for data in images * 4:
        classify(triton_server, "grpc", [data])
    per_image = (sum(minor_page_faults(pid) for pid in stubs) - before) / (len(images) * 4)
    assert per_image < 20, f"{per_image:.0f} page faults per 640x480 JPEG in the preprocessor's stubs"
