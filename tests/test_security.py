"""Untrusted clients against beit-serve: access keys on the administrative APIs (and optionally inference),
gRPC TLS and mutual TLS with certificates made here, request size limits, and a short fuzz run. The longer
fuzz run: `make fuzz`."""

from __future__ import annotations

import datetime
import gzip
import http.client
import ipaddress
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tritonclient.utils import InferenceServerException

from beit_client import (
    BeitClient,
    InvalidRequestError,
    ServerUnavailableError,
    TLSConfig,
)
from loadtest import fuzz
from loadtest.beit_serve_process import BeitServe, beit_serve, readiness
from tests.conftest import run_probe
from tests.images import encode, photo

pytestmark = pytest.mark.server

KEY = "s3cret-admin-key"
HEADER = "beit-key"


@pytest.fixture(scope="module")
def repository(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(tiny_repository, tmp_path_factory.mktemp("security") / "repository"))


def _http(serve: BeitServe) -> tuple[str, int]:
    host, port = serve.http_url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def call(
    serve: BeitServe, method: str, path: str, body: bytes | None = None, **headers: str
) -> tuple[int, Any]:
    connection = http.client.HTTPConnection(*_http(serve), timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    return response.status, json.loads(payload) if payload.startswith(b"{") else payload


# Each administrative API group as (method, path, body), and a gRPC call in the same group.
ADMIN_HTTP = {
    "model-repository": ("POST", "/v2/repository/index", b"{}"),
    "model-config": ("GET", "/v2/models/beit/config", None),
    "statistics": ("GET", "/v2/models/beit/stats", None),
    "trace": ("GET", "/v2/trace/setting", None),
    "logging": ("GET", "/v2/logging", None),
    "shared-memory": ("GET", "/v2/systemsharedmemory/status", None),
}


def admin_grpc(client: grpcclient.InferenceServerClient, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "model-repository": lambda: client.get_model_repository_index(headers=headers),
        "model-config": lambda: client.get_model_config("beit", headers=headers),
        "statistics": lambda: client.get_inference_statistics("beit", headers=headers),
        "trace": lambda: client.get_trace_settings(headers=headers),
        "logging": lambda: client.get_log_settings(headers=headers),
        "shared-memory": lambda: client.get_system_shared_memory_status(headers=headers),
    }


@pytest.fixture(scope="module")
def keyed(repository: Path) -> Iterator[BeitServe]:
    with beit_serve(repository, "--admin-key", KEY) as serve:
        yield serve


@pytest.mark.parametrize("api", sorted(ADMIN_HTTP))
def test_each_administrative_http_api_refuses_without_the_key_and_answers_with_it(keyed: BeitServe, api: str):
    method, path, body = ADMIN_HTTP[api]
    status, answer = call(keyed, method, path, body)
    assert status == 403
    assert answer == {"error": f"This API is restricted, expecting header '{HEADER}'"}
    assert call(keyed, method, path, body, **{HEADER: "wrong"})[0] == 403
    assert call(keyed, method, path, body, **{HEADER: KEY})[0] == 200


def test_each_administrative_grpc_api_refuses_without_the_key_and_answers_with_it(keyed: BeitServe):
    client = grpcclient.InferenceServerClient(keyed.grpc_url.removeprefix("grpc://"))
    for api, refused in admin_grpc(client, {}).items():
        with pytest.raises(InferenceServerException) as caught:
            refused()
        assert caught.value.status() == "StatusCode.PERMISSION_DENIED", api
        assert f"expecting header '{HEADER}'" in caught.value.message(), api
    for api, allowed in admin_grpc(client, {HEADER: KEY}).items():
        assert allowed() is not None, api
    # Triton's own name for the header works too.
    assert client.get_model_config("beit", headers={f"triton-grpc-protocol-{HEADER}": KEY}) is not None


def test_health_and_inference_stay_open_without_protect_inference(keyed: BeitServe):
    assert readiness(keyed.http_url) == 200
    image = encode(photo(64, 48, seed=2), "PNG")
    assert call(keyed, "GET", "/v2/models/beit")[0] == 200
    # The SDK reads the model config (restricted): it passes the key with headers=.
    for url in (keyed.http_url, keyed.grpc_url):
        with BeitClient(url, headers={HEADER: KEY}) as client:
            assert len(client.classify(image, top_k=2)[0]) == 2
            assert client.model_info().num_labels == 10
        with BeitClient(url, max_retries=0) as client, pytest.raises(InvalidRequestError) as caught:
            client.model_info()
        assert caught.value.status_code in (403, "PERMISSION_DENIED")
        assert HEADER in str(caught.value)


def test_protect_inference_puts_inference_and_metadata_behind_the_key_and_leaves_health_open(
    repository: Path,
):
    image = encode(photo(64, 48, seed=3), "PNG")
    with beit_serve(
        repository, "--admin-key", KEY, "--protect-inference", "--key-header", "X-Api-Key"
    ) as serve:
        assert readiness(serve.http_url) == 200 and readiness(serve.http_url, "/v2/health/live") == 200
        status, answer = call(serve, "GET", "/v2/models/beit")
        assert status == 403 and answer == {"error": "This API is restricted, expecting header 'x-api-key'"}
        for url in (serve.http_url, serve.grpc_url):
            with BeitClient(url, max_retries=0) as client, pytest.raises(InvalidRequestError):
                client.classify(image)
            with BeitClient(url, headers={"X-Api-Key": KEY}) as client:
                assert client.classify(image, top_k=1)[0][0].label
        http = httpclient.InferenceServerClient(serve.http_url.removeprefix("http://"))
        assert http.is_server_ready() and http.is_model_ready("beit")
        grpc = grpcclient.InferenceServerClient(serve.grpc_url.removeprefix("grpc://"))
        assert grpc.is_server_ready() and grpc.is_model_ready("beit")
        assert run_probe(serve.http_url).returncode == 1
        assert run_probe(serve.http_url, "--key", KEY, "--key-header", "x-api-key").returncode == 0


# ---------------------------------------------------------------- TLS


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_cert(certificate: x509.Certificate, path: Path) -> Path:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, other_key, server_key, client_key = _key(), _key(), _key(), _key()
    ca = _certificate("beit test CA", ca_key, None, ca_key, ca=True)
    other = _certificate("another CA", other_key, None, other_key, ca=True)
    return Pki(
        ca=_write_cert(ca, folder / "ca.pem"),
        server_cert=_write_cert(
            _certificate("127.0.0.1", server_key, ca, ca_key, server=True), folder / "server.pem"
        ),
        server_key=_write_key(server_key, folder / "server.key"),
        client_cert=_write_cert(_certificate("a client", client_key, ca, ca_key), folder / "client.pem"),
        client_key=_write_key(client_key, folder / "client.key"),
        other_ca=_write_cert(other, folder / "other-ca.pem"),
    )


def _classify(url: str, tls: TLSConfig | None = None) -> Any:
    with BeitClient(url, tls=tls, max_retries=0, timeout=10) as client:
        return client.classify(encode(photo(64, 48, seed=4), "PNG"), top_k=1)


def test_grpc_tls_answers_grpcs_with_the_ca_and_refuses_plaintext_and_a_wrong_ca(repository: Path, pki: Pki):
    with beit_serve(
        repository, "--grpc-tls-cert", str(pki.server_cert), "--grpc-tls-key", str(pki.server_key)
    ) as serve:
        secure = serve.grpc_url.replace("grpc://", "grpcs://")
        assert _classify(secure, TLSConfig(root_certificates=str(pki.ca)))[0][0].label
        with pytest.raises(ServerUnavailableError):
            _classify(serve.grpc_url)
        with pytest.raises(ServerUnavailableError):
            _classify(secure, TLSConfig(root_certificates=str(pki.other_ca)))
        # HTTP is not TLS here (a reverse proxy terminates HTTPS: deploy/nginx) and still answers.
        assert _classify(serve.http_url)[0][0].label


def test_mutual_tls_refuses_a_client_without_a_certificate_and_answers_one_the_ca_signed(
    repository: Path, pki: Pki
):
    args = ["--grpc-tls-cert", str(pki.server_cert), "--grpc-tls-key", str(pki.server_key)]
    with beit_serve(repository, *args, "--grpc-tls-ca", str(pki.ca)) as serve:
        secure = serve.grpc_url.replace("grpc://", "grpcs://")
        with pytest.raises(ServerUnavailableError):
            _classify(secure, TLSConfig(root_certificates=str(pki.ca)))
        mutual = TLSConfig(
            root_certificates=str(pki.ca),
            private_key=str(pki.client_key),
            certificate_chain=str(pki.client_cert),
        )
        assert _classify(secure, mutual)[0][0].label


# ---------------------------------------------------------------- limits and hostile input


@pytest.fixture(scope="module")
def limited(repository: Path) -> Iterator[BeitServe]:
    with beit_serve(
        repository, "--http-max-input-size", str(2**20), "--grpc-max-input-size", str(2**20)
    ) as serve:
        yield serve


def test_an_http_body_over_the_limit_gets_413_and_the_server_keeps_serving(limited: BeitServe):
    image = encode(photo(64, 48, seed=6), "PNG")
    for body, headers in (
        (b"x" * (2**20 + 1), {"Content-Type": "application/json"}),
        (
            gzip.compress(b" " * (50 * 2**20)),
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ),
    ):
        status, answer = call(limited, "POST", "/v2/models/beit/infer", body, **headers)
        assert status == 413
        assert "exceeds the limit of 1048576 bytes" in answer["error"]
    with BeitClient(limited.http_url) as client:
        assert client.classify(image, top_k=1)[0][0].label


def test_a_grpc_message_over_the_limit_gets_resource_exhausted_and_the_sdk_an_invalid_request(
    limited: BeitServe,
):
    big = np.array([[b"\0" * (2**20 + 10)]], dtype=np.object_)
    tensor = grpcclient.InferInput("IMAGE", [1, 1], "BYTES")
    tensor.set_data_from_numpy(big)
    client = grpcclient.InferenceServerClient(limited.grpc_url.removeprefix("grpc://"))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("beit", [tensor])
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than max" in caught.value.message()
    with BeitClient(limited.grpc_url) as sdk:
        with pytest.raises(InvalidRequestError):
            sdk.classify(b"\xff\xd8" + b"\0" * 2**20)
        assert sdk.classify(encode(photo(64, 48, seed=7), "PNG"), top_k=1)[0][0].label


def test_a_short_fuzz_run_gets_only_client_errors_and_good_requests_keep_answering(
    repository: Path, tmp_path: Path
):
    args = fuzz.parse_arguments(
        ["--repository", str(repository), "--out", str(tmp_path), "--count", "600", "--huge-body-mb", "100"]
    )
    report = fuzz.run(args)
    assert report["checks"] == dict.fromkeys(report["checks"], True), fuzz.summary(report)
    assert report["malformed"] > 450
    assert {
        "http 100 MB body",
        "grpc 100 MB message",
        "http broken JSON",
        "grpc undecodable protobuf",
    } <= set(report["answers"])
    # Under the default limits (64 MiB on both protocols).
    assert set(report["answers"]["http 100 MB body"]) == {"413"}
    assert set(report["answers"]["grpc 100 MB message"]) == {"RESOURCE_EXHAUSTED"}
