"""Locust users that classify real encoded images through the beit_client SDK, over HTTP or gRPC.

    locust -f loadtest/locustfile.py --host http://HOST:8000                  # both protocols, half each
    locust -f loadtest/locustfile.py --host grpc://HOST:8001 GrpcBeitUser     # one protocol, by class name
    locust -f loadtest/locustfile.py --host http://HOST:9000 --grpc-host grpc://HOST:9001   # other ports
    locust -f loadtest/locustfile.py,loadtest/shape.py --headless --host ...  # step up to the p95 SLO
    locust -f loadtest/locustfile.py --host http://HOST:8080 GatewayBeitUser  # through beit-gateway (REST)

Each user owns one SDK client (its own connection, as one application instance would) and sends one image
per request, back to back. Every call is reported once through `events.request` with the time the SDK
call took, so Locust's statistics are the latency a user of the SDK sees, not a bare HTTP round trip.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import grpc.experimental.gevent as grpc_gevent
import httpx
from locust import User, constant, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

# gRPC runs its own I/O threads, which would block gevent's loop and serialize every user; this makes it
# cooperate with gevent. It must run before the first channel is created.
grpc_gevent.init_gevent()

# Locust puts only the working directory and this file's folder on sys.path; the package imports below
# need the repository root, wherever locust is started from.
_REPOSITORY_ROOT = str(Path(__file__).resolve().parent.parent)
if _REPOSITORY_ROOT not in sys.path:
    sys.path.insert(0, _REPOSITORY_ROOT)

from beit_client import BeitClient  # noqa: E402
from loadtest.corpus import load_corpus  # noqa: E402
from loadtest.gateway import GATEWAY_FORMS, classify_via_gateway  # noqa: E402
from loadtest.options import parsed_options  # noqa: E402
from loadtest.urls import url_for_protocol  # noqa: E402

_corpus: list[bytes] = []
_user_numbers = itertools.count()


def _add_arguments(parser: LocustArgumentParser) -> None:
    group = parser.add_argument_group("beit", "BEiT image classification load")
    group.add_argument(
        "--images",
        env_var="BEIT_LOADTEST_IMAGES",
        default="",
        help="Folder of image files to send (every worker needs it at the same path); "
        "default: a generated, seeded corpus of photo-like JPEGs",
    )
    group.add_argument(
        "--grpc-host",
        env_var="BEIT_LOADTEST_GRPC_HOST",
        default="",
        help="The gRPC users' server, grpc://HOST:PORT; default: --host when it is grpc://, else its host on "
        "port 8001",
    )
    group.add_argument("--corpus-size", type=int, default=64, help="Generated images (without --images)")
    group.add_argument("--top-k", type=int, default=5, help="Classes asked for per image")
    group.add_argument("--request-timeout-s", type=float, default=60.0, help="SDK timeout per request")
    group.add_argument(
        "--sdk-max-retries",
        type=int,
        default=0,
        help="SDK retries of transient errors per call (default 0: every error counts, each request is timed "
        "alone); with retries, a call fails only once the SDK gives up",
    )
    group.add_argument(
        "--gateway-url",
        default="",
        help="beit-gateway's URL for GatewayBeitUser, e.g. http://HOST:8080 (default: --host)",
    )
    group.add_argument(
        "--gateway-form",
        choices=GATEWAY_FORMS,
        default="hf-raw",
        help="What GatewayBeitUser sends: the image as the body of /models/beit (hf-raw), base64 JSON to "
        "/models/beit (hf-json) or to /score (azure)",
    )


def _build_corpus(environment: Environment, **_kwargs: object) -> None:
    # Built in every process that runs users, after a worker has received the master's arguments; the
    # master sends no requests and needs none.
    if isinstance(environment.runner, MasterRunner) or _corpus:
        return
    options = parsed_options(environment)
    _corpus.extend(load_corpus(options.images or None, count=options.corpus_size))


def _gateway_only_when_named(environment: Environment, **_kwargs: object) -> None:
    # A run that names no user class keeps its HTTP and gRPC mix against Triton: the gateway is a separate
    # deployment, measured when GatewayBeitUser is named. Workers keep every class, so that a master that
    # names it can have them spawn it.
    if isinstance(environment.runner, WorkerRunner) or len(environment.user_classes) < 2:
        return
    named = getattr(environment.parsed_options, "user_classes", None) or []
    if GatewayBeitUser.__name__ not in named:
        environment.user_classes[:] = [c for c in environment.user_classes if c is not GatewayBeitUser]


events.init_command_line_parser.add_listener(_add_arguments)
events.test_start.add_listener(_build_corpus)
events.init.add_listener(_gateway_only_when_named)


class BeitUser(User):
    """One application instance: an SDK client and its own walk through the corpus."""

    abstract = True
    protocol = ""
    wait_time = constant(0)

    def server(self, options: argparse.Namespace) -> str:
        """The server this user's protocol is sent to."""
        return self.host or ""

    def on_start(self) -> None:
        options = parsed_options(self.environment)
        host = self.server(options)
        if not host:
            raise ValueError("give the server with --host, e.g. http://HOST:8000 or grpc://HOST:8001")
        self.top_k = options.top_k
        # Retries hide failures and fold attempts into one response time, so a capacity test runs without
        # them; a fault test runs with them, to see what an application using the SDK would see.
        self.client = BeitClient(
            url_for_protocol(host, self.protocol),
            timeout=options.request_timeout_s,
            max_retries=options.sdk_max_retries,
        )
        # Users start at different images so concurrent requests carry different sizes.
        start = next(_user_numbers) % len(_corpus)
        self.images = itertools.islice(itertools.cycle(_corpus), start, None)

    def on_stop(self) -> None:
        self.client.close()

    @task
    def classify(self) -> None:
        image = next(self.images)
        exception: Exception | None = None
        start = time.perf_counter()
        try:
            self.client.classify([image], top_k=self.top_k)
        # Any error is a failed request to the user of the SDK; one the SDK fails to translate must still
        # count against the failure rate instead of vanishing from the statistics.
        except Exception as error:
            exception = error
        self.environment.events.request.fire(
            request_type=self.protocol,
            name="classify",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=0,
            response=None,
            context={},
            exception=exception,
        )


class HttpBeitUser(BeitUser):
    protocol = "http"


class GrpcBeitUser(BeitUser):
    protocol = "grpc"

    def server(self, options: argparse.Namespace) -> str:
        return str(options.grpc_host) or super().server(options)


class GatewayBeitUser(User):
    """One application instance calling beit-gateway's REST endpoints (an httpx client and its own
    connection), one image per request, back to back. A call is reported once, with the time the whole HTTP
    exchange took; any answer but 200 is a failure."""

    wait_time = constant(0)

    def on_start(self) -> None:
        options = parsed_options(self.environment)
        url = options.gateway_url or self.host
        if not url or not url.startswith(("http://", "https://")):
            raise ValueError("give beit-gateway's URL with --gateway-url or --host, e.g. http://HOST:8080")
        self.top_k = options.top_k
        self.form = options.gateway_form
        self.client = httpx.Client(base_url=url, timeout=options.request_timeout_s)
        start = next(_user_numbers) % len(_corpus)
        self.images = itertools.islice(itertools.cycle(_corpus), start, None)

    def on_stop(self) -> None:
        self.client.close()

    @task
    def classify(self) -> None:
        image = next(self.images)
        exception: Exception | None = None
        length = 0
        start = time.perf_counter()
        try:
            length = classify_via_gateway(self.client, self.form, image, self.top_k)
        except Exception as error:
            exception = error
        self.environment.events.request.fire(
            request_type="gateway",
            name="classify",
            response_time=(time.perf_counter() - start) * 1000,
            response_length=length,
            response=None,
            context={"form": self.form},
            exception=exception,
        )
