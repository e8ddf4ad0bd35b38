"""beit-gateway's parts that need no server: reading image strings, the URL policy, score functions, the two
request contracts, settings and options. The live tests (test_gateway_live.py) run it against Triton."""

from __future__ import annotations

import base64
import ipaddress
import json
import types
from urllib.parse import quote_from_bytes

import numpy as np
import pytest

import beit_gateway
from beit_gateway import BadRequestError, GatewaySettings, ImageError, InvalidImagesError, refusal
from beit_gateway._contracts import parse_azure, parse_hugging_face
from beit_gateway._images import ImageURL, parse_image_string
from beit_gateway._metrics import endpoint_of
from beit_gateway._upstream import apply_function
from beit_gateway.cli import parse_args

IMAGE = bytes(range(256)) * 40
"""Bytes whose base64 uses every character of the alphabet, line breaks included once encoded."""
LIMIT = 1 << 20


def test_all_public_names_are_exported_and_sorted() -> None:
    public = sorted(
        name
        for name, value in vars(beit_gateway).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    )
    assert beit_gateway.__all__ == public


# ---------------------------------------------------------------- image strings


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(IMAGE).decode(),
        base64.encodebytes(IMAGE).decode(),  # a line break every 76 characters, and one at the end
        base64.encodebytes(IMAGE).decode().replace("\n", "\r\n"),
        base64.b64encode(IMAGE).decode().rstrip("="),  # unpadded
        base64.urlsafe_b64encode(IMAGE).decode(),
        "data:image/png;base64," + base64.b64encode(IMAGE).decode(),
        "data:;base64," + base64.encodebytes(IMAGE).decode(),
        "data:application/octet-stream," + quote_from_bytes(IMAGE),  # percent-encoded, not base64
        "  " + base64.b64encode(IMAGE).decode() + "\n",
    ],
)
def test_every_accepted_image_string_decodes_to_the_same_bytes(encoded: str) -> None:
    assert parse_image_string(encoded, 0, max_bytes=LIMIT) == IMAGE


@pytest.mark.parametrize("url", ["http://example.com/cat.jpg", "HTTPS://example.com/a?b=c"])
def test_http_and_https_urls_are_left_to_fetch(url: str) -> None:
    assert parse_image_string(url, 0, max_bytes=LIMIT) == ImageURL(url)


@pytest.mark.parametrize(
    ("value", "code", "reason"),
    [
        ("not base64!", "invalid_base64", "not valid base64"),
        ("abcde", "invalid_base64", "not valid base64"),
        ("ÿÿÿÿ", "invalid_base64", "non-ASCII"),
        ("", "empty_image", "empty string"),
        ("   ", "empty_image", "empty string"),
        ("data:image/png;base64,", "empty_image", "no bytes"),
        ("data:image/png;base64", "invalid_data_url", "needs a ','"),
        ("file:///etc/passwd", "unsupported_url_scheme", "'file'"),
        ("ftp://example.com/a.jpg", "unsupported_url_scheme", "'ftp'"),
        ("gopher://example.com/", "unsupported_url_scheme", "'gopher'"),
        (12, "not_a_string", "got a number"),
        (None, "not_a_string", "got null"),
        ({"image": "x"}, "not_a_string", "got an object"),
        (["x"], "not_a_string", "got an array"),
    ],
)
def test_a_bad_image_string_is_that_images_error_with_its_index_and_reason(
    value: object, code: str, reason: str
) -> None:
    with pytest.raises(ImageError) as raised:
        parse_image_string(value, 7, max_bytes=LIMIT)
    assert (raised.value.index, raised.value.code) == (7, code)
    assert str(raised.value).startswith("image 7: ") and reason in str(raised.value)


def test_an_image_over_the_size_limit_is_refused_before_it_is_decoded() -> None:
    encoded = base64.b64encode(b"x" * 3000).decode()
    assert parse_image_string(encoded, 0, max_bytes=3000) == b"x" * 3000
    with pytest.raises(ImageError, match="over the limit of 2999 bytes") as raised:
        parse_image_string(encoded, 0, max_bytes=2999)
    assert raised.value.code == "image_too_large"


# ---------------------------------------------------------------- URL policy (SSRF)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("169.254.169.254", "a cloud metadata address"),
        ("169.254.170.2", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("100.100.100.200", "a cloud metadata address"),
        ("127.0.0.1", "a loopback address"),
        ("127.10.20.30", "a loopback address"),
        ("::1", "a loopback address"),
        ("169.254.1.1", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("10.0.0.1", "a private address"),
        ("172.16.5.4", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("0.0.0.0", "a private address"),
        ("100.64.0.1", "not a public address"),  # carrier-grade NAT
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("2001:db8::1", "a private address"),  # documentation
    ],
)
def test_non_public_addresses_are_refused_with_their_category(address: str, why: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == f"{address} is {why}"


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1 is a loopback address"),  # IPv4-mapped: judged as the IPv4 address
        ("::ffff:169.254.169.254", "169.254.169.254 is a cloud metadata address"),
        ("2002:a00:1::", "embeds 10.0.0.1, a private address"),  # 6to4
        ("64:ff9b::7f00:1", "embeds 127.0.0.1, a loopback address"),  # NAT64
    ],
)
def test_ipv6_addresses_embedding_a_refused_ipv4_address_are_refused(address: str, inner: str) -> None:
    why = refusal(ipaddress.ip_address(address))
    assert why is not None and why.endswith(inner)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_fetched(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_the_allowlist_opens_its_networks_but_never_the_metadata_addresses() -> None:
    allow = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("169.254.0.0/16"))
    assert refusal(ipaddress.ip_address("127.0.0.1"), allow) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allow) is None
    assert refusal(ipaddress.ip_address("169.254.1.1"), allow) is None
    assert (
        refusal(ipaddress.ip_address("169.254.169.254"), allow)
        == "169.254.169.254 is a cloud metadata address"
    )
    assert refusal(ipaddress.ip_address("10.0.0.1"), allow) == "10.0.0.1 is a private address"


# ---------------------------------------------------------------- scores


def test_score_functions_follow_transformers_on_the_chosen_classes() -> None:
    logits = np.array([2.0, -1.0, 0.5, 3.0], dtype=np.float32)
    chosen = [3, 0]
    assert apply_function("none", logits, chosen) == [3.0, 2.0]
    assert apply_function("sigmoid", logits, chosen) == pytest.approx(1 / (1 + np.exp(-np.array([3.0, 2.0]))))
    softmax = np.exp(logits.astype(np.float64)) / np.exp(logits.astype(np.float64)).sum()
    assert apply_function("softmax", logits, chosen) == pytest.approx(softmax[chosen])
    # Softmax is taken over every class, so huge logits neither overflow nor lose the small ones.
    assert apply_function("softmax", np.array([1000.0, 999.0], dtype=np.float32), [0, 1]) == pytest.approx(
        [1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))]
    )


# ---------------------------------------------------------------- contracts


def azure(body: object) -> bytes:
    return json.dumps(body).encode()


def test_the_azure_list_and_split_forms_read_the_same_images_and_parameters() -> None:
    listed = parse_azure(azure({"input_data": ["a", "b"], "parameters": {"top_k": 3}}))
    split = parse_azure(
        azure(
            {
                "input_data": {"columns": ["image"], "index": [0, 1], "data": ["a", "b"]},
                "params": {"top_k": 3},
            }
        )
    )
    rows = parse_azure(azure({"input_data": {"columns": ["id", "image"], "data": [[1, "a"], [2, "b"]]}}))
    assert list(listed.images) == list(split.images) == list(rows.images) == ["a", "b"]
    assert listed.top_k == split.top_k == 3 and rows.top_k is None
    assert listed.function is None


def test_a_split_row_of_the_wrong_length_is_that_images_error() -> None:
    parsed = parse_azure(azure({"input_data": {"columns": ["id", "image"], "data": [[1, "a"], ["b"]]}}))
    assert parsed.images[0] == "a"
    error = parsed.images[1]
    assert isinstance(error, ImageError) and error.index == 1 and error.code == "invalid_row"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Invalid JSON"),
        (b"[]", "Input should be an object"),
        (azure({}), "input_data: Field required"),
        (azure({"input_data": "abc"}), "input_data"),
        (azure({"input_data": {"columns": ["img"], "data": ["a"]}}), "columns must include 'image'"),
        (
            azure({"input_data": {"columns": ["image"], "index": [0], "data": ["a", "b"]}}),
            "1 entries for 2 rows",
        ),
        (azure({"input_data": {"columns": ["image"]}}), "input_data.data: Field required"),
        (azure({"input_data": ["a"], "parameters": {"top_k": 0}}), "parameters.top_k"),
        (azure({"input_data": ["a"], "parameters": {"top_k": "3"}}), "parameters.top_k"),
        (azure({"input_data": ["a"], "parameters": {"topk": 3}}), "parameters.topk: Extra inputs"),
        (azure({"input_data": ["a"], "extra": 1}), "extra: Extra inputs are not permitted"),
        (azure({"input_data": ["a"], "parameters": {"function_to_apply": "relu"}}), "function_to_apply"),
    ],
)
def test_a_malformed_azure_request_is_a_400_naming_the_field(body: bytes, message: str) -> None:
    with pytest.raises(BadRequestError, match="invalid request: ") as raised:
        parse_azure(body)
    assert message in str(raised.value) and raised.value.status == 400


def test_the_hugging_face_json_form_reads_one_image_and_its_parameters() -> None:
    parsed = parse_hugging_face(
        json.dumps({"inputs": "abc", "parameters": {"top_k": 2, "function_to_apply": "none"}}).encode()
    )
    assert list(parsed.images) == ["abc"] and parsed.top_k == 2 and parsed.function == "none"
    with pytest.raises(BadRequestError, match="inputs: Field required"):
        parse_hugging_face(b'{"parameters": {}}')


def test_an_invalid_images_error_names_every_image_and_says_how_many_failed() -> None:
    error = InvalidImagesError([ImageError(2, "b", "two"), ImageError(0, "a", "zero")], total=3)
    body = error.body("rid")
    assert body["error"] == "2 of 3 images could not be classified: image 0: zero; image 2: two"
    assert body["errors"] == [
        {"index": 0, "code": "a", "message": "image 0: zero"},
        {"index": 2, "code": "b", "message": "image 2: two"},
    ]
    assert (body["status"], body["code"], body["request_id"]) == (400, "invalid_image", "rid")
    assert InvalidImagesError([ImageError(0, "a", "zero")], total=1).body(None)["error"] == "image 0: zero"


# ---------------------------------------------------------------- settings and options


def test_the_documented_command_line_gives_the_documented_defaults() -> None:
    settings: GatewaySettings = parse_args(["--triton-url", "grpc://triton:8001", "--port", "8080"]).settings
    assert settings == GatewaySettings(triton_url="grpc://triton:8001")
    assert (settings.top_k, settings.api_key, settings.url_inputs, settings.url_allow) == (5, None, True, ())


def test_every_option_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEIT_GATEWAY_API_KEY", "from-env")
    args = parse_args(
        [
            "--top-k", "3", "--max-top-k", "50", "--max-body-bytes", "1000", "--max-images", "4",
            "--max-image-bytes", "900", "--triton-timeout-s", "2.5", "--retry-after-s", "9",
            "--url-allow", "10.0.0.0/8", "--url-allow", "127.0.0.1", "--no-url-inputs",
            "--url-timeout-s", "1.5", "--url-max-redirects", "0",
        ]
    )  # fmt: skip
    assert args.settings == GatewaySettings(
        top_k=3,
        max_top_k=50,
        api_key="from-env",
        max_body_bytes=1000,
        max_images=4,
        max_image_bytes=900,
        triton_timeout_s=2.5,
        retry_after_s=9,
        url_inputs=False,
        url_allow=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")),
        url_timeout_s=1.5,
        url_max_redirects=0,
    )
    assert parse_args(["--api-key", "given"]).settings.api_key == "given"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--triton-url", "triton:8001"], "unsupported URL scheme"),
        (["--top-k", "0"], "top_k must be within 1..1000"),
        (["--top-k", "20", "--max-top-k", "10"], "top_k must be within 1..10"),
        (["--max-body-bytes", "0"], "max_body_bytes must be at least 1"),
        (["--triton-timeout-s", "0"], "triton_timeout_s must be positive"),
        (["--url-allow", "not-a-network"], "not an IP address or CIDR network"),
    ],
)
def test_invalid_options_are_refused_at_startup(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("path", "endpoint"),
    [
        ("/score", "/score"),
        ("/models/beit", "/models/{model}"),
        ("/models/other", "/models/{model}"),
        ("/models/a/b", "other"),
        ("/metrics", "/metrics"),
        ("/random/path", "other"),
    ],
)
def test_metrics_label_requests_by_route_template_with_bounded_values(path: str, endpoint: str) -> None:
    assert endpoint_of(path) == endpoint
