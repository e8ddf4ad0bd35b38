"""The SDK and the beit-client CLI against the real embedded Triton server: what they answer is what raw
tritonclient calls on the ensembles answer, over both protocols, sync and async."""

from __future__ import annotations

import asyncio
import functools
import http.server
import io
import json
import shutil
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

from beit_client import (
    AsyncBeitClient,
    BeitClient,
    BeitClientError,
    InferRequest,
    InvalidImageError,
    ModelInfo,
    Prediction,
    RetryPolicy,
    ServerUnavailableError,
    ServerURL,
    Transport,
)
from beit_client._transports import create_transport
from beit_client._transports.base import ModelConfig
from beit_client.cli import classify_to_file, collect_sources, main
from beit_preprocessing import DEFAULT_MAX_PIXELS, PreprocessingConfig
from tests.conftest import free_port
from tests.images import encode, photo, png_declaring, varied_images

pytestmark = pytest.mark.server

FAST_RETRY = RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)
PROTOCOLS = ["http", "grpc"]
KINDS = ["sync", "async"]


# ---------------------------------------------------------------- raw tritonclient, the reference


def server_url(server: Any, protocol: str) -> str:
    return str(server.http_url if protocol == "http" else server.grpc_url)


def raw_infer(server: Any, protocol: str, model: str, images: list[bytes], output: str, class_count: int = 0):
    if protocol == "http":
        module: Any = httpclient
        client: Any = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    else:
        module = grpcclient
        client = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
    try:
        batch = np.array([[data] for data in images], dtype=np.object_)
        image_input = module.InferInput("IMAGE", list(batch.shape), "BYTES")
        image_input.set_data_from_numpy(batch)
        requested = module.InferRequestedOutput(output, class_count=class_count)
        return client.infer(model, [image_input], outputs=[requested]).as_numpy(output)
    finally:
        client.close()


def raw_classify(server: Any, protocol: str, images: list[bytes], top_k: int = 5) -> list[list[Prediction]]:
    rows = raw_infer(server, protocol, "beit", images, "PROBABILITIES", class_count=top_k)
    predictions = []
    for row in rows:
        entries = [entry.decode().split(":", 2) for entry in row]
        predictions.append([Prediction(label, float(score), int(index)) for score, index, label in entries])
    return predictions


def raw_embed(server: Any, protocol: str, images: list[bytes]) -> np.ndarray:
    return np.asarray(raw_infer(server, protocol, "beit_embedding", images, "EMBEDDING"), dtype=np.float32)


# ---------------------------------------------------------------- one face for both clients


class Client:
    """`BeitClient` as it is, or `AsyncBeitClient` on an event loop of its own with every method awaited:
    one test body drives both."""

    def __init__(self, kind: str, url: str, **options: Any) -> None:
        self.kind = kind
        self.protocol = url.partition("://")[0]
        self._loop: asyncio.AbstractEventLoop | None = None
        if kind == "sync":
            self._client: Any = BeitClient(url, **options)
        else:
            self._loop = asyncio.new_event_loop()

            async def create() -> AsyncBeitClient:
                return AsyncBeitClient(url, **options)

            self._client = self._loop.run_until_complete(create())

    def with_options(self, **changes: Any) -> Client:
        """The configured copy, driven on this wrapper's loop."""
        configured = object.__new__(Client)
        configured.__dict__.update(self.__dict__, _client=self._client.with_options(**changes))
        return configured

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if self._loop is None:
            return method
        loop = self._loop
        return lambda *args, **kwargs: loop.run_until_complete(method(*args, **kwargs))

    def each(self, method: str, items: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """`method` called once per item, all at once (threads, or tasks on the loop)."""
        call = getattr(self._client, method)
        if self._loop is None:
            with ThreadPoolExecutor(len(items)) as pool:
                return list(pool.map(lambda item: call(item, *args, **kwargs), items))

        async def gather() -> list[Any]:
            return list(await asyncio.gather(*(call(item, *args, **kwargs) for item in items)))

        return self._loop.run_until_complete(gather())

    def close(self) -> None:
        if self._loop is None:
            self._client.close()
        else:
            self._loop.run_until_complete(self._client.close())
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(params=[(p, k) for p in PROTOCOLS for k in KINDS], ids=lambda p: f"{p[0]}-{p[1]}")
def client(request: pytest.FixtureRequest, triton_server: Any) -> Iterator[Client]:
    protocol, kind = request.param
    with Client(kind, server_url(triton_server, protocol), retry=FAST_RETRY) as c:
        yield c


def jpegs(count: int, seed: int = 0) -> list[bytes]:
    """Small JPEGs of varied sizes and aspect ratios."""
    return [
        encode(photo(24 + (7 * i) % 61, 20 + (11 * i) % 53, seed=seed + i), "JPEG", quality=90)
        for i in range(count)
    ]


def assert_same_predictions(
    actual: list[list[Prediction]], expected: list[list[Prediction]], atol: float = 0.0
) -> None:
    assert len(actual) == len(expected)
    for position, (got, want) in enumerate(zip(actual, expected, strict=True)):
        assert [p.index for p in got] == [p.index for p in want], position
        assert [p.label for p in got] == [p.label for p in want], position
        if atol == 0.0:
            assert [p.score for p in got] == [p.score for p in want], position
        else:
            np.testing.assert_allclose([p.score for p in got], [p.score for p in want], atol=atol)


# ---------------------------------------------------------------- 1. both protocols, both clients


def test_classify_and_embed_answer_exactly_what_raw_tritonclient_calls_answer(client: Any, triton_server):
    images = list(varied_images().values())[:6]
    expected = raw_classify(triton_server, client.protocol, images)
    assert_same_predictions(client.classify(images), expected)
    assert client.classify(images[0], 3) == raw_classify(triton_server, client.protocol, images[:1], top_k=3)
    assert all(p.label == f"class {p.index}" for row in expected for p in row)

    embeddings = client.embed(images)
    assert embeddings.dtype == np.float32 and embeddings.shape == (6, 32)
    np.testing.assert_array_equal(embeddings, raw_embed(triton_server, client.protocol, images))


def test_health_and_model_info_describe_the_served_checkpoint(client: Any, tiny_checkpoint: Path):
    assert client.live() is True
    assert client.ready() is True
    info = client.model_info()
    assert isinstance(info, ModelInfo)
    assert (info.num_labels, info.embedding_size, info.max_batch_size) == (10, 32, 32)
    assert info.checkpoint == str(tiny_checkpoint)
    assert info.random_weights is False and info.multi_label is False
    processor = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    assert info.preprocessing == PreprocessingConfig.from_image_processor_dict(processor)
    assert client.model_info(refresh=True) == info


def test_the_async_http_client_sends_a_request_over_one_mebibyte_without_a_resource_warning(triton_server):
    images = [encode(photo(420, 420, seed=i), "PNG") for i in range(4)]
    assert sum(map(len, images)) > 2**20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Client("async", triton_server.http_url, retry=FAST_RETRY) as c:
            answered = c.classify(images)
    assert_same_predictions(answered, raw_classify(triton_server, "http", images))


# ---------------------------------------------------------------- 2. more images than a batch


@pytest.mark.parametrize(("protocol", "kind"), [("http", "sync"), ("grpc", "async")])
def test_more_images_than_the_max_batch_size_come_back_in_input_order(triton_server, protocol, kind):
    images = jpegs(40)
    with Client(kind, server_url(triton_server, protocol), retry=FAST_RETRY, max_concurrency=2) as c:
        together = c.classify(images, 5)
        # One request per image, sent together so that the server's batching window does not serialize them.
        singles = [rows[0] for rows in c.each("classify", images, 5)]
        embeddings = c.embed(images)
        single_embeddings = np.concatenate(c.each("embed", images))
    assert len(together) == 40
    # Batched and single requests may differ in the last float bits, never in the ranking.
    assert_same_predictions(together, singles, atol=1e-5)
    np.testing.assert_allclose(embeddings, single_embeddings, atol=1e-5)
    assert len({tuple(p.index for p in row) for row in together}) > 1, "every image answered the same"


# ---------------------------------------------------------------- 3. client-side preprocessing


@pytest.mark.parametrize(("protocol", "kind"), [("grpc", "sync"), ("http", "async")])
def test_client_side_preprocessing_answers_what_the_ensemble_answers(triton_server, protocol, kind):
    images = list(varied_images().values()) + [photo(97, 61, seed=5), np.asarray(photo(64, 80, seed=6))]
    url = server_url(triton_server, protocol)
    with (
        Client(kind, url, retry=FAST_RETRY) as server_side,
        Client(kind, url, retry=FAST_RETRY, preprocess="client") as client_side,
    ):
        ensemble = server_side.classify(images, 5)
        local = client_side.classify(images, 5)
        assert_same_predictions(local, ensemble, atol=1e-5)
        np.testing.assert_allclose(client_side.embed(images), server_side.embed(images), atol=1e-5)
        # A copy configured for client-side preprocessing reaches the same answer from a server-side client.
        assert_same_predictions(
            server_side.with_options(preprocess="client").classify(images[:3], 5), ensemble[:3], atol=1e-5
        )


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_server_and_client_side_preprocessing_refuse_the_same_images_by_pixel_count(
    triton_server, protocol
):
    over_limit = png_declaring(DEFAULT_MAX_PIXELS + 1, 1)
    at_limit = png_declaring(DEFAULT_MAX_PIXELS, 1)
    url = server_url(triton_server, protocol)
    reasons = {}
    with BeitClient(url, retry=FAST_RETRY) as client:
        for preprocess in ("server", "client"):
            over, at = client.with_options(preprocess=preprocess).classify(
                [over_limit, at_limit], return_exceptions=True
            )
            assert isinstance(over, InvalidImageError)
            reasons[preprocess] = over.reason
            # Within the limit the image is decoded (and found truncated): the limit itself let it through.
            assert isinstance(at, InvalidImageError) and "truncated" in str(at), preprocess
    # Both name the limit and the two settings that raise it, in the same words.
    assert reasons["server"] == reasons["client"]
    assert (
        f"= {DEFAULT_MAX_PIXELS + 1:,} pixels, more than the {DEFAULT_MAX_PIXELS:,} allowed"
        in reasons["server"]
    )
    assert "max_pixels parameter of the beit_preprocess model config" in reasons["server"]
    assert "beit_preprocessing.DEFAULT_MAX_PIXELS" in reasons["server"]


# ---------------------------------------------------------------- 4. an invalid image fails alone


def test_an_invalid_image_fails_alone_with_its_index(client: Any, triton_server):
    good = jpegs(3, seed=100)
    truncated = encode(photo(320, 240), "JPEG")[:2000]
    images: list[Any] = [good[0], good[1], b"this is not an image" * 10, good[2], truncated]
    expected = raw_classify(triton_server, client.protocol, good)

    outcomes = client.classify(images, 5, return_exceptions=True)
    for index in (2, 4):
        assert isinstance(outcomes[index], InvalidImageError), outcomes[index]
        assert outcomes[index].index == index
    answered = [outcome for index, outcome in enumerate(outcomes) if index not in (2, 4)]
    assert_same_predictions(answered, expected, atol=1e-5)

    with pytest.raises(InvalidImageError) as raised:
        client.classify(images, 5)
    assert raised.value.index == 2

    embedded = client.embed(images, return_exceptions=True)
    assert [i for i, e in enumerate(embedded) if isinstance(e, InvalidImageError)] == [2, 4]
    with pytest.raises(InvalidImageError) as raised:
        client.embed(images)
    assert raised.value.index == 2
    assert client.ready(), "the bad images left the server unready"


def test_an_unreadable_source_fails_before_sending_and_the_rest_are_answered(triton_server, tmp_path):
    good = jpegs(2, seed=200)
    with Client("sync", triton_server.http_url, retry=FAST_RETRY) as c:
        outcomes = c.classify([good[0], str(tmp_path / "missing.jpg"), good[1]], 3, return_exceptions=True)
    assert isinstance(outcomes[1], InvalidImageError) and outcomes[1].index == 1
    assert "missing.jpg" in outcomes[1].source
    # The source names the path; the reason does not repeat it.
    assert outcomes[1].reason == "No such file or directory"
    assert_same_predictions(
        [outcomes[0], outcomes[2]], raw_classify(triton_server, "http", good, 3), atol=1e-5
    )


# ---------------------------------------------------------------- 5. every input kind


@pytest.fixture
def image_url(tmp_path: Path) -> Iterator[Callable[[str, bytes], str]]:
    """Files served over plain HTTP on 127.0.0.1 from a thread."""
    root = tmp_path / "www"
    root.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def publish(name: str, data: bytes) -> str:
        (root / name).write_bytes(data)
        return f"http://127.0.0.1:{server.server_address[1]}/{name}"

    try:
        yield publish
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_every_input_kind_the_sdk_accepts_is_classified(client: Any, triton_server, tmp_path, image_url):
    picture = photo(150, 110, seed=42)
    jpeg = encode(picture, "JPEG", quality=92)
    png = encode(picture, "PNG")
    path = tmp_path / "picture.jpg"
    path.write_bytes(jpeg)
    inputs: dict[str, Any] = {
        "str path": str(path),
        "Path": path,
        "bytes": jpeg,
        "bytearray": bytearray(jpeg),
        "file object": io.BytesIO(jpeg),
        "URL": image_url("picture.jpg", jpeg),
        "PIL image": picture,
        "numpy HWC uint8": np.asarray(picture),
    }
    # Files, bytes and URLs go as they are; in-memory images are sent as lossless PNG.
    by_jpeg, by_png = raw_classify(triton_server, client.protocol, [jpeg, png])
    outcomes = client.classify(list(inputs.values()), 5, return_exceptions=True)
    for (name, image), outcome in zip(inputs.items(), outcomes, strict=True):
        assert not isinstance(outcome, BeitClientError), (name, outcome)
        expected = by_png if isinstance(image, (Image.Image, np.ndarray)) else by_jpeg
        assert_same_predictions([outcome], [expected], atol=1e-6)
    with open(path, "rb") as file:
        assert_same_predictions(client.classify(file, 5), [by_jpeg], atol=1e-6)


# ---------------------------------------------------------------- 6. errors


class CountingTransport(Transport):
    """A real transport that counts what the client asks of it."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.requests: list[InferRequest] = []

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def infer(self, request: InferRequest) -> dict[str, Any]:
        self._count("infer")
        self.requests.append(request)
        return self.inner.infer(request)

    def server_live(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        self._count("server_live")
        return self.inner.server_live(headers, timeout)

    def server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        self._count("server_ready")
        return self.inner.server_ready(headers, timeout)

    def model_ready(self, model: str, headers: Mapping[str, str], timeout: float | None) -> bool:
        self._count("model_ready")
        return self.inner.model_ready(model, headers, timeout)

    def model_config(self, model: str, headers: Mapping[str, str], timeout: float | None) -> ModelConfig:
        self._count("model_config")
        return self.inner.model_config(model, headers, timeout)

    def close(self) -> None:
        self.inner.close()


def counting_transport(url: str) -> CountingTransport:
    return CountingTransport(create_transport(ServerURL.parse(url), timeout=30.0, tls=None))


def counting_client(url: str) -> tuple[BeitClient, CountingTransport]:
    transport = counting_transport(url)
    return BeitClient(url, retry=FAST_RETRY, transport=transport), transport


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_wrong_port_is_a_transient_unavailable_error_after_the_retries(protocol):
    url = f"{protocol}://127.0.0.1:{free_port()}"
    client, transport = counting_client(url)
    with client:
        assert client.live() is False and client.ready() is False
        with pytest.raises(ServerUnavailableError):
            client.classify(encode(photo(32, 32), "PNG"))
        # One first attempt and two retries; then one liveness probe (after live()'s own) tells "down" from
        # "loaded but not ready".
        assert transport.calls["model_config"] == 1 + FAST_RETRY.max_retries
        assert transport.calls["server_live"] == 2
        with pytest.raises(ServerUnavailableError):
            client.model_info()
        assert transport.calls["model_config"] == 2 * (1 + FAST_RETRY.max_retries)
    assert "infer" not in transport.calls


@pytest.mark.parametrize("kind", KINDS)
def test_both_clients_on_a_wrong_port_raise_the_transient_error_over_either_protocol(kind):
    with Client(kind, f"grpc://127.0.0.1:{free_port()}", retry=FAST_RETRY) as c:
        assert c.live() is False
        with pytest.raises(ServerUnavailableError):
            c.embed([encode(photo(32, 32), "PNG")])
    with Client(kind, f"http://127.0.0.1:{free_port()}", retry=FAST_RETRY) as c:
        with pytest.raises(ServerUnavailableError):
            c.classify([encode(photo(32, 32), "PNG")])


REFUSED_STATUS = {"http": 400, "grpc": "INVALID_ARGUMENT"}


def test_a_refused_image_carries_the_status_code_model_and_its_own_request_id(client: Any):
    images: list[Any] = [jpegs(1, seed=500)[0], b"not an image" * 10, b"nor this" * 10]
    outcomes = client.embed(images, return_exceptions=True)
    refused = outcomes[1:]
    assert all(isinstance(error, InvalidImageError) for error in refused), refused
    for error in refused:
        assert (error.status_code, error.model) == (REFUSED_STATUS[client.protocol], "beit_embedding")
        assert len(error.request_id) == 32 and int(error.request_id, 16) >= 0
        assert error.__cause__.request_id == error.request_id
        assert error.__cause__.status_code == error.status_code
    assert refused[0].request_id != refused[1].request_id


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_request_id_of_a_refused_image_is_the_one_sent_with_its_request(triton_server, protocol):
    url = server_url(triton_server, protocol)
    client, transport = counting_client(url)
    with client:
        outcomes = client.classify([jpegs(1, seed=600)[0], b"not an image" * 10], return_exceptions=True)
    error = outcomes[1]
    assert isinstance(error, InvalidImageError)
    [batch, first, second] = transport.requests
    assert batch.batch_size == 2 and first.batch_size == second.batch_size == 1
    assert error.request_id == second.request_id
    assert len({batch.request_id, first.request_id, second.request_id}) == 3
    assert (error.status_code, error.model) == (REFUSED_STATUS[protocol], "beit")


def test_triton_echoes_the_request_id_the_sdk_sends(triton_server):
    """The id reaches the server: Triton answers with it (the HTTP answer's `id`)."""
    seen: list[str] = []
    original = httpclient.InferenceServerClient.infer

    def infer(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        seen.append(result.get_response()["id"])
        return result

    client, transport = counting_client(triton_server.http_url)
    with client, pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpclient.InferenceServerClient, "infer", infer)
        client.classify(jpegs(1, seed=700))
    assert seen == [request.request_id for request in transport.requests]


# ---------------------------------------------------------------- 7. a server stopped mid-job, resumed


class StopAfterGroups(BeitClient):
    """Stops `server` just before the batch job sends its group number `stop_before` (1-based), and keeps
    what each group got back."""

    def __init__(self, url: str, server: Any, stop_before: int, transport: Transport) -> None:
        super().__init__(url, retry=FAST_RETRY, transport=transport)
        self.server = server
        self.stop_before = stop_before
        self.groups = 0
        self.outcomes: list[Any] = []
        self._lock = threading.Lock()

    def classify(self, images: Any, top_k: int = 5, **options: Any) -> Any:
        with self._lock:
            self.groups += 1
            if self.groups == self.stop_before:
                self.server.stop()
        outcomes = super().classify(images, top_k, **options)
        with self._lock:
            self.outcomes.extend(outcomes)
        return outcomes


def read_results(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_a_job_cut_by_a_stopped_server_fails_transiently_and_a_rerun_completes_it_exactly_once(
    tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from beit_serve import EmbeddedServer

    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository)
    folder = tmp_path / "photos"
    folder.mkdir()
    # 40 images: the job sends them in groups of max_batch_size (32), so a first group, then a second.
    for i, data in enumerate(jpegs(40, seed=300)):
        (folder / f"{i:02d}.jpg").write_bytes(data)
    sources = collect_sources([str(folder)])
    output = tmp_path / "results.jsonl"
    server = EmbeddedServer(
        repository, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(), exit_timeout=2
    )
    with server:
        transport = counting_transport(server.grpc_url)
        hooked = StopAfterGroups(server.grpc_url, server, stop_before=2, transport=transport)
        args = ["classify", str(folder), "--url", server.grpc_url, "--output", str(output)]
        code = main([*args, "--concurrency", "1", "--no-progress"], make_client=lambda _: hooked)
        captured = capsys.readouterr()
        assert code == 1
        assert "32 written, 0 already done" in captured.err
        assert "8 image(s) failed" in captured.err
        failures = [o for o in hooked.outcomes if isinstance(o, BeitClientError)]
        assert len(failures) == 8 and all(isinstance(e, ServerUnavailableError) for e in failures)
        # One group of 8 → one request, tried once and retried twice.
        assert transport.calls["infer"] == 1 + (1 + FAST_RETRY.max_retries)
        done = read_results(output)
        assert [line["source"] for line in done] == sources[:32]

        # A rerun while the server is still down fails with the same transient error and writes nothing.
        dead, dead_transport = counting_client(server.grpc_url)
        with dead, pytest.raises(ServerUnavailableError):
            classify_to_file(dead, sources, output, concurrency=1, progress=False)
        assert dead_transport.calls["model_config"] == 1 + FAST_RETRY.max_retries
        assert read_results(output) == done
        code = main([*args, "--max-retries", "0", "--no-progress"])
        assert code == 1 and "error:" in capsys.readouterr().err
        assert read_results(output) == done

        server.start()
        server.wait_until_ready()
        code = main([*args, "--no-progress"])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "8 written, 32 already done" in captured.err

    results = read_results(output)
    assert sorted(line["source"] for line in results) == sorted(sources)
    assert len(results) == len(set(line["source"] for line in results)) == 40
    assert all(len(line["predictions"]) == 5 for line in results)


def test_a_batch_job_through_a_sigterm_under_load_and_a_restart_ends_with_every_image_exactly_once(
    tiny_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    """beit-serve drains on SIGTERM while the job has requests in flight: those are answered and written, the
    rest fail transiently once the server is gone; restarted on the same ports, a rerun completes the job."""
    import subprocess
    import sys
    import time

    from loadtest.beit_serve_process import BeitServe, wait_ready

    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository)
    folder = tmp_path / "photos"
    folder.mkdir()
    # The job sends groups of max_batch_size (32), 4 at a time: 1,200 images outlast the signal.
    for i, data in enumerate(jpegs(1200, seed=900)):
        (folder / f"{i:04d}.jpg").write_bytes(data)
    sources = collect_sources([str(folder)])
    output = tmp_path / "results.jsonl"
    ports = [str(free_port()) for _ in range(3)]

    def start() -> BeitServe:
        command = [sys.executable, "-m", "beit_serve", "--repository", str(repository)]
        command += ["--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]]
        serve = BeitServe(
            subprocess.Popen(command), f"http://127.0.0.1:{ports[0]}", f"grpc://127.0.0.1:{ports[1]}", None
        )
        wait_ready(serve)
        return serve

    serve = start()
    args = ["classify", str(folder), "--url", serve.grpc_url, "--output", str(output), "--no-progress"]
    codes: list[int] = []
    job = threading.Thread(
        target=lambda: codes.append(main([*args, "--concurrency", "4", "--max-retries", "1"]))
    )
    try:
        job.start()
        deadline = time.monotonic() + 60
        while not output.exists() or not output.read_text().count("\n"):
            assert time.monotonic() < deadline, "the job wrote nothing"
            time.sleep(0.05)
        serve.process.send_signal(signal.SIGTERM)
        job.join(timeout=120)
        assert serve.process.wait(60) == 0
        first = read_results(output)
        assert codes == [1] and 0 < len(first) < len(sources), (codes, len(first))
        assert "failed" in capsys.readouterr().err

        serve = start()
        assert main([*args]) == 0
        assert f"{len(sources) - len(first)} written, {len(first)} already done" in capsys.readouterr().err
    finally:
        serve.stop()
    results = read_results(output)
    assert sorted(line["source"] for line in results) == sorted(sources)
    assert len(results) == len({line["source"] for line in results}) == len(sources)


# ---------------------------------------------------------------- 8. the CLI against the live server


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_cli_classifies_embeds_and_reports_health_and_info(
    triton_server, protocol, tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
):
    url = server_url(triton_server, protocol)
    images = jpegs(3, seed=400)
    paths = []
    for i, data in enumerate(images):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(data)

    assert main(["classify", *map(str, paths), "--url", url, "--json", "--top-k", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["source"] for line in lines] == [str(p) for p in paths]
    expected = raw_classify(triton_server, protocol, images, top_k=3)
    for line, row in zip(lines, expected, strict=True):
        assert [Prediction(**p) for p in line["predictions"]] == row

    assert main(["classify", str(paths[0]), "--url", url]) == 0
    table = capsys.readouterr().out
    assert str(paths[0]) in table and expected[0][0].label in table

    assert main(["health", "--url", url]) == 0
    assert "live: True" in (health := capsys.readouterr().out) and "ready: True" in health

    assert main(["info", "--url", url]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checkpoint"] == str(tiny_checkpoint)
    assert (info["num_labels"], info["embedding_size"], info["max_batch_size"]) == (10, 32, 32)

    embeddings = tmp_path / "emb.npy"
    assert main(["embed", str(tmp_path), "--url", url, "--output", str(embeddings)]) == 0
    capsys.readouterr()
    array = np.load(embeddings)
    assert array.shape == (3, 32) and array.dtype == np.float32
    assert embeddings.with_suffix(".txt").read_text().splitlines() == [str(p) for p in paths]
    np.testing.assert_array_equal(array, raw_embed(triton_server, protocol, images))


def test_the_cli_health_on_a_dead_server_exits_non_zero(capsys: pytest.CaptureFixture[str]):
    assert main(["health", "--url", f"http://127.0.0.1:{free_port()}"]) == 1
    assert "live: False" in capsys.readouterr().out
    code = main(["info", "--url", f"grpc://127.0.0.1:{free_port()}", "--max-retries", "0"])
    assert code == 1 and "error:" in capsys.readouterr().err
