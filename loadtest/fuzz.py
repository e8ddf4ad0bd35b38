"""A bounded fuzz run: malformed requests over HTTP and gRPC, with good requests between them.

    python -m loadtest.fuzz --repository DIR --count 3000 --out results/fuzz      # make fuzz

Against a beit-serve it starts, `--count` requests drawn (seeded) from the kinds below, over both protocols.
Every malformed one must get a 4xx (gRPC: a client-error status such as INVALID_ARGUMENT, NOT_FOUND,
RESOURCE_EXHAUSTED), or an answer where the odd request is valid after all (a class_count above the label
count is capped), and never a 5xx / INTERNAL / UNKNOWN / UNAVAILABLE; every `--good-every`th request is a
good classification, which must answer; after the run a good request must still answer, and the RSS of
Triton plus its stubs must not grow by more than 5% after the warm-up (`--warmup-fraction` of the run: the
stubs' allocator grows to its working size over the first ~1,500 varied images, then stays flat, measured
here to 8,000 requests). Writes fuzz.json with the answers counted by kind and status.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import http.client
import io
import json
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
from PIL import Image
from tritonclient.grpc import service_pb2

from beit_repository.names import CLASSIFY_MODEL, IMAGE, PROBABILITIES
from loadtest.beit_serve_process import BeitServe, beit_serve
from loadtest.processes import Sample, sample

MB = 2**20
MAX_RSS_GROWTH = 0.05
INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
CLIENT_ERRORS = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "RESOURCE_EXHAUSTED",
        "UNIMPLEMENTED",
        "PERMISSION_DENIED",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "UNAUTHENTICATED",
        "ALREADY_EXISTS",
    }
)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.fuzz", description=__doc__)
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results/fuzz"))
    parser.add_argument("--count", type=int, default=3000, help="requests in all, good ones included")
    parser.add_argument("--good-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--warmup-fraction", type=float, default=0.5, help="share of the run before the RSS baseline"
    )
    parser.add_argument(
        "--huge-body-mb", type=int, default=100, help="the size of the oversized body sent (HTTP and gRPC)"
    )
    return parser.parse_args(argv)


def image_bytes(rng: random.Random) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (rng.randint(8, 64), rng.randint(8, 64)), (rng.randint(0, 255), 20, 40)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def infer_json(image: bytes, **overrides: Any) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": IMAGE,
        "shape": [1, 1],
        "datatype": "BYTES",
        "data": [base64.b64encode(image).decode()],
    }
    tensor.update(overrides.pop("tensor", {}))
    request: dict[str, Any] = {
        "inputs": [tensor],
        "outputs": [{"name": PROBABILITIES, "parameters": {"classification": 3}}],
    }
    request.update(overrides)
    return request


@dataclass(frozen=True)
class HttpCase:
    kind: str
    path: str
    body: bytes
    headers: dict[str, str]
    method: str = "POST"


@dataclass(frozen=True)
class GrpcCase:
    kind: str
    method: str
    body: bytes


Case = HttpCase | GrpcCase
INFER_PATH = f"/v2/models/{CLASSIFY_MODEL}/infer"
JSON = {"Content-Type": "application/json"}


def _json_case(kind: str, request: Any, path: str = INFER_PATH) -> HttpCase:
    return HttpCase(kind, path, json.dumps(request).encode(), JSON)


def http_cases(rng: random.Random) -> list[Callable[[], HttpCase]]:
    def broken_json() -> HttpCase:
        text = json.dumps(infer_json(image_bytes(rng)))
        cut = rng.randint(0, len(text) - 1)
        mangled = rng.choice(
            [text[:cut], text[:cut] + "}}}", text.replace('"', "'"), "\x00" * cut, "[" * 5000]
        )
        return HttpCase("http broken JSON", INFER_PATH, mangled.encode(), JSON)

    def random_bytes() -> HttpCase:
        return HttpCase("http random bytes", INFER_PATH, rng.randbytes(rng.randint(0, 5000)), JSON)

    def wrong_datatype() -> HttpCase:
        datatype = rng.choice(["FP32", "INT8", "UINT8", "BOOL", "FP16", "INT64", "nonsense", ""])
        data = rng.choice([[1.0], [1], [True], ["x"]])
        return _json_case(
            "http wrong datatype", infer_json(image_bytes(rng), tensor={"datatype": datatype, "data": data})
        )

    def wrong_shape() -> HttpCase:
        shape = rng.choice([[1], [1, 2], [2, 1], [0, 1], [-1, 1], [1, 1, 1], [10**12, 1], [], "x", [1.5, 1]])
        return _json_case("http wrong shape", infer_json(image_bytes(rng), tensor={"shape": shape}))

    def wrong_batch() -> HttpCase:
        n = rng.choice([33, 64, 200])
        encoded = base64.b64encode(image_bytes(rng)).decode()
        return _json_case(
            "http batch over max_batch_size", infer_json(b"", tensor={"shape": [n, 1], "data": [encoded] * n})
        )

    def base64_garbage() -> HttpCase:
        data = rng.choice(
            ["!!!not base64!!!", "QUJD", "", "=" * 7, base64.b64encode(rng.randbytes(300)).decode(), 12]
        )
        return _json_case("http base64 garbage", infer_json(b"", tensor={"data": [data]}))

    def huge_class_count() -> HttpCase:
        count = rng.choice([10**9, 2**31, 2**63, -1, 0, "many", 1.5, None])
        request = infer_json(
            image_bytes(rng), outputs=[{"name": PROBABILITIES, "parameters": {"classification": count}}]
        )
        return _json_case("http huge class_count", request)

    def unknown_output() -> HttpCase:
        name = rng.choice(["NOPE", "", "LOGITS", "PIXEL_VALUES", "a" * 1000])
        return _json_case("http unknown output", infer_json(image_bytes(rng), outputs=[{"name": name}]))

    def unknown_model() -> HttpCase:
        model = rng.choice(["nope", "beit_nope", "..%2F..%2Fetc", "beit/versions/99", "a" * 500])
        return _json_case("http unknown model", infer_json(image_bytes(rng)), f"/v2/models/{model}/infer")

    def binary_header() -> HttpCase:
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": IMAGE,
                        "shape": [1, 1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 10**6},
                    }
                ]
            }
        ).encode()
        length = rng.choice([str(len(header) + 10**6), "-5", "abc", str(len(header) - 3), "99999999999"])
        return HttpCase(
            "http bad binary header length",
            INFER_PATH,
            header + rng.randbytes(20),
            {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": length},
        )

    def bad_method_or_path() -> HttpCase:
        method, path = rng.choice(
            [
                ("GET", INFER_PATH),
                ("DELETE", INFER_PATH),
                ("PUT", "/v2/models/beit"),
                ("POST", "/v2/nope"),
                ("POST", "/"),
            ]
        )
        return HttpCase("http wrong method or route", path, b"{}", JSON, method)

    def not_an_image() -> HttpCase:
        return _json_case("http not an image", infer_json(rng.randbytes(rng.randint(1, 2000))))

    return [
        broken_json,
        random_bytes,
        wrong_datatype,
        wrong_shape,
        wrong_batch,
        base64_garbage,
        huge_class_count,
        unknown_output,
        unknown_model,
        binary_header,
        bad_method_or_path,
        not_an_image,
    ]


def grpc_request(rng: random.Random, image: bytes, **changes: Any) -> bytes:
    request = service_pb2.ModelInferRequest(model_name=changes.get("model", CLASSIFY_MODEL))
    request.inputs.add(
        name=IMAGE, datatype=changes.get("datatype", "BYTES"), shape=changes.get("shape", [1, 1])
    )
    output = request.outputs.add(name=changes.get("output", PROBABILITIES))
    if "class_count" in changes:
        output.parameters["classification"].int64_param = changes["class_count"]
    length = len(image).to_bytes(4, "little")
    request.raw_input_contents.append(changes.get("raw", length + image))
    return bytes(request.SerializeToString())


def grpc_cases(rng: random.Random) -> list[Callable[[], GrpcCase]]:
    def garbage() -> GrpcCase:
        return GrpcCase("grpc undecodable protobuf", INFER_METHOD, rng.randbytes(rng.randint(1, 3000)))

    def wrong_datatype() -> GrpcCase:
        datatype = rng.choice(["FP32", "INT8", "UINT8", "BOOL", "nonsense", ""])
        return GrpcCase(
            "grpc wrong datatype", INFER_METHOD, grpc_request(rng, image_bytes(rng), datatype=datatype)
        )

    def wrong_shape() -> GrpcCase:
        shape = rng.choice([[1], [1, 2], [2, 1], [0, 1], [-1, 1], [1, 1, 1], [10**12, 1], []])
        return GrpcCase("grpc wrong shape", INFER_METHOD, grpc_request(rng, image_bytes(rng), shape=shape))

    def wrong_batch() -> GrpcCase:
        n = rng.choice([33, 100])
        image = image_bytes(rng)
        raw = (len(image).to_bytes(4, "little") + image) * n
        return GrpcCase(
            "grpc batch over max_batch_size", INFER_METHOD, grpc_request(rng, image, shape=[n, 1], raw=raw)
        )

    def bad_raw_contents() -> GrpcCase:
        raw = rng.choice(
            [b"", b"\xff\xff\xff\xff", (10**6).to_bytes(4, "little") + b"abc", rng.randbytes(50)]
        )
        return GrpcCase("grpc malformed BYTES contents", INFER_METHOD, grpc_request(rng, b"", raw=raw))

    def huge_class_count() -> GrpcCase:
        count = rng.choice([10**9, 2**62, -1])
        return GrpcCase(
            "grpc huge class_count", INFER_METHOD, grpc_request(rng, image_bytes(rng), class_count=count)
        )

    def unknown_output() -> GrpcCase:
        return GrpcCase(
            "grpc unknown output", INFER_METHOD, grpc_request(rng, image_bytes(rng), output="NOPE")
        )

    def unknown_model() -> GrpcCase:
        model = rng.choice(["nope", "", "../../etc", "a" * 500])
        return GrpcCase("grpc unknown model", INFER_METHOD, grpc_request(rng, image_bytes(rng), model=model))

    def unknown_method() -> GrpcCase:
        return GrpcCase("grpc unknown method", "/inference.GRPCInferenceService/Nope", b"")

    def not_an_image() -> GrpcCase:
        return GrpcCase(
            "grpc not an image", INFER_METHOD, grpc_request(rng, rng.randbytes(rng.randint(1, 2000)))
        )

    return [
        garbage,
        wrong_datatype,
        wrong_shape,
        wrong_batch,
        bad_raw_contents,
        huge_class_count,
        unknown_output,
        unknown_model,
        unknown_method,
        not_an_image,
    ]


class Sender:
    def __init__(self, serve: BeitServe) -> None:
        http = urlsplit(serve.http_url)
        self.host, self.port = http.hostname or "127.0.0.1", http.port or 8000
        self.channel = grpc.insecure_channel(
            serve.grpc_url.removeprefix("grpc://"), options=[("grpc.max_send_message_length", -1)]
        )

    def http(self, case: HttpCase) -> str:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            connection.request(case.method, case.path, body=case.body, headers=case.headers)
            response = connection.getresponse()
            response.read()
            return str(response.status)
        except (OSError, http.client.HTTPException) as error:
            return f"no answer: {type(error).__name__}"
        finally:
            connection.close()

    def grpc(self, case: GrpcCase) -> str:
        call = self.channel.unary_unary(case.method)
        try:
            call(case.body, timeout=120)
            return "OK"
        except grpc.RpcError as error:
            return str(error.code().name)

    def send(self, case: Case) -> str:
        return self.http(case) if isinstance(case, HttpCase) else self.grpc(case)

    def good(self, rng: random.Random, protocol: str) -> bool:
        image = image_bytes(rng)
        if protocol == "http":
            return self.http(_json_case("good", infer_json(image))) == "200"
        return self.grpc(GrpcCase("good", INFER_METHOD, grpc_request(rng, image, class_count=3))) == "OK"


def acceptable(status: str) -> bool:
    """A client error (HTTP 4xx, or a gRPC status that blames the request), or an answer: some odd requests
    are valid (a class_count over the label count is capped, a batch of 0 answers nothing)."""
    return (
        status in ("200", "OK") or (status.isdigit() and 400 <= int(status) < 500) or status in CLIENT_ERRORS
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    answers: dict[str, Counter[str]] = defaultdict(Counter)
    unexplained: list[str] = []
    good_failures = 0
    goods = 0
    with beit_serve(args.repository, log=args.out / "beit-serve.log") as serve:
        sender = Sender(serve)
        makers: list[Callable[[], Case]] = [*http_cases(rng), *grpc_cases(rng)]
        huge = rng.randbytes(args.huge_body_mb * MB)
        oversized: list[Case] = [
            HttpCase(f"http {args.huge_body_mb} MB body", INFER_PATH, huge, JSON),
            GrpcCase(f"grpc {args.huge_body_mb} MB message", INFER_METHOD, grpc_request(rng, huge)),
            HttpCase(
                "http gzip bomb (200 MB inflated)",
                INFER_PATH,
                gzip.compress(b"\0" * (200 * MB), compresslevel=9),
                {**JSON, "Content-Encoding": "gzip"},
            ),
        ]

        def record(case: Case) -> None:
            status = sender.send(case)
            answers[case.kind][status] += 1
            if not acceptable(status):
                unexplained.append(f"{case.kind}: {status}")

        # Warm-up: one of every kind, so buffers and caches reach their working size before the baseline.
        # The oversized ones go once per 500 requests: building and refusing them costs seconds.
        for make in makers:
            record(make())
        for case in oversized:
            record(case)
        for protocol in ("http", "grpc"):
            sender.good(rng, protocol)
        time.sleep(1)
        before = sample(serve.pid, time.time())
        started = time.monotonic()
        readings: list[tuple[int, float, float]] = []
        warmed_up: Sample | None = None
        for index in range(args.count):
            if index % 250 == 0 and (reading := sample(serve.pid, time.time())) is not None:
                readings.append((index, reading.triton_rss / MB, reading.stubs_rss / MB))
            if index == int(args.count * args.warmup_fraction):
                warmed_up = sample(serve.pid, time.time())
            if index % args.good_every == 0:
                goods += 1
                good_failures += not sender.good(rng, "http" if index % 2 == 0 else "grpc")
            elif index % 500 == 255:
                record(oversized[(index // 500) % len(oversized)])
            else:
                record(rng.choice(makers)())
        elapsed = time.monotonic() - started
        time.sleep(1)
        after = sample(serve.pid, time.time())
        still_good = sender.good(rng, "http") and sender.good(rng, "grpc")
        sender.channel.close()
    assert before is not None and after is not None and warmed_up is not None, "beit-serve runs a Triton"
    growth = after.rss / warmed_up.rss - 1
    malformed = sum(sum(c.values()) for c in answers.values())
    checks = {
        "every malformed request got a 4xx / client-error status": not unexplained,
        "every good request between them answered": good_failures == 0 and goods > 0,
        "good requests answer after the run": still_good,
        f"RSS of Triton + stubs grew <= {MAX_RSS_GROWTH:.0%} after the warm-up": growth <= MAX_RSS_GROWTH,
    }
    report = {
        "requests": args.count,
        "malformed": malformed,
        "good": goods,
        "good_failures": good_failures,
        "seconds": elapsed,
        "answers": {kind: dict(counter) for kind, counter in sorted(answers.items())},
        "unexplained": unexplained[:50],
        "rss_mb": {
            "first": before.rss / MB,
            "after_warmup": warmed_up.rss / MB,
            "after": after.rss / MB,
            "growth_after_warmup": growth,
            "growth_from_first": after.rss / before.rss - 1,
        },
        "rss_readings": [{"request": i, "triton_mb": t, "stubs_mb": s} for i, t, s in readings],
        "gateway_rss_mb": {"before": before.serve_rss / MB, "after": after.serve_rss / MB},
        "checks": checks,
    }
    (args.out / "fuzz.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(report: dict[str, Any]) -> str:
    lines = [
        f"{report['requests']} requests in {report['seconds']:.0f} s: {report['malformed']} malformed, "
        f"{report['good']} good ({report['good_failures']} failed)",
        f"RSS Triton+stubs {report['rss_mb']['first']:.1f} -> {report['rss_mb']['after_warmup']:.1f} "
        f"(after warm-up) -> {report['rss_mb']['after']:.1f} MB "
        f"({report['rss_mb']['growth_after_warmup']:+.1%} "
        f"after warm-up); gateway {report['gateway_rss_mb']['before']:.1f} -> "
        f"{report['gateway_rss_mb']['after']:.1f} MB",
    ]
    for kind, statuses in report["answers"].items():
        lines.append(f"  {kind:<36} " + ", ".join(f"{s} x{n}" for s, n in sorted(statuses.items())))
    lines += [f"{'PASS' if ok else 'FAIL'}  {name}" for name, ok in report["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    report = run(args)
    print(summary(report))
    return 0 if all(report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
