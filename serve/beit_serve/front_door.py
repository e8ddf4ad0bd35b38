"""beit-serve's front door: the public HTTP and gRPC ports, forwarded to Triton listening on loopback.

Triton 2.51 (the wheel's) has no request-size limit on either protocol (`--http-max-input-size` came in
2.59; gRPC is fixed at INT32_MAX in every release, src/common.h MAX_GRPC_MESSAGE_SIZE), and a 600 MB request
measured here took Triton and its stubs from 0.16 to 3-5 GB RSS. The front door refuses what is over the limit
before Triton sees a byte of it: HTTP 413 with Triton's error JSON, gRPC RESOURCE_EXHAUSTED. It also says
what Triton cannot know:

- while the supervisor recovers a model, or drains on shutdown, readiness answers "not ready" and every
  other request a retryable 503 / UNAVAILABLE naming the reason;
- a 500 / INTERNAL that Triton sends because a Python-backend stub died becomes that 503 / UNAVAILABLE
  (Triton 2.51 says "Stub process ... is not healthy" and keeps reporting ready, server#8604);
- gRPC callers send the access key under its plain name, as over HTTP; Triton checks it as
  `triton-grpc-protocol-<name>` (its restricted-protocol header), which the front door adds. A gRPC call
  without the right key is refused here with PERMISSION_DENIED: Triton 2.51 refuses it with UNAVAILABLE
  (src/grpc/grpc_server.cc), which every client, ours included, would retry as a passing outage.

- requests that Triton would answer with 500 / INTERNAL only because it cannot parse them (not JSON, a
  BYTES element that is not a string, a non-integer `classification`, a message that is not the method's
  protobuf) are refused with 400 / INVALID_ARGUMENT (`validation`).

Everything else passes through unchanged: headers, status codes, bodies (compressed ones are inflated here,
within the limit, so a small gzip body cannot expand inside Triton), gRPC metadata and streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from tritonclient.grpc import service_pb2

from beit_serve.server import Restriction
from beit_serve.validation import INFER_HEADER_LENGTH, grpc_request_problem, http_infer_problem

logger = logging.getLogger(__name__)

HTTP_HEALTH_LIVE = "/v2/health/live"
HTTP_HEALTH_READY = "/v2/health/ready"
GRPC_SERVICE = "/inference.GRPCInferenceService/"
GRPC_RESTRICTED_PREFIX = "triton-grpc-protocol-"
"""Triton's kRestrictedProtocolHeaderTemplate (src/grpc/grpc_server.h)."""

# Not forwarded: they describe one hop (RFC 9110 7.6.1), or aiohttp sets them for the body it sends.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
_DRAIN_LIMIT_FACTOR = 16
"""An oversized HTTP body is read and discarded up to this many times the limit, so that a client that sends
it whole still reads the 413; beyond that the connection is closed."""


@dataclass(frozen=True)
class GrpcTLS:
    """TLS for the public gRPC port: PEM files. `client_ca` set means mutual TLS: clients must present a
    certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> Any:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.client_ca.read_bytes() if self.client_ca else None,
            require_client_auth=self.client_ca is not None,
        )


GRPC_API_GROUPS: dict[str, tuple[str, ...]] = {
    "health": ("ServerLive", "ServerReady", "ModelReady"),
    "metadata": ("ServerMetadata", "ModelMetadata"),
    "inference": ("ModelInfer", "ModelStreamInfer"),
    "shared-memory": (
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
    ),
    "model-config": ("ModelConfig",),
    "model-repository": ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"),
    "statistics": ("ModelStatistics",),
    "trace": ("TraceSetting",),
    "logging": ("LogSettings",),
}
"""Triton's restricted API groups and the GRPCInferenceService methods in each (src/restricted_features.h,
src/grpc/grpc_server.cc)."""


def grpc_methods(restriction: Restriction) -> frozenset[str]:
    return frozenset(GRPC_SERVICE + method for api in restriction.apis for method in GRPC_API_GROUPS[api])


class ServingState:
    """What the supervisor tells the front door, and what the front door counts for it. Thread safe."""

    def __init__(self, stub_died: Callable[[], bool] = lambda: False) -> None:
        self._lock = threading.Lock()
        self._refusal: str | None = "the server is starting"
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self.stub_died = stub_died
        """True when a Python-backend stub Triton relies on is gone: its 500s are then unavailability."""

    @property
    def refusal(self) -> str | None:
        """Why requests are refused now; None while serving."""
        return self._refusal

    def serve(self) -> None:
        with self._lock:
            self._refusal = None

    def refuse(self, reason: str) -> None:
        with self._lock:
            self._refusal = reason

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Until no request is in flight, or `timeout` seconds; whether it got there."""
        with self._lock:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


def _error_json(message: str) -> bytes:
    # Triton's error body ({"error": ...}), which tritonclient reads into its exception's message.
    return json.dumps({"error": message}).encode()


_INFER_PATH = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")


def _is_readiness(path: str) -> bool:
    return path == HTTP_HEALTH_READY or (path.startswith("/v2/models/") and path.endswith("/ready"))


class _TooLarge(Exception):
    def __init__(self, size: int, exact: bool) -> None:
        super().__init__(size)
        self.size = size
        self.exact = exact


class HttpFront:
    def __init__(self, state: ServingState, upstream: str, max_input_size: int) -> None:
        self.state = state
        self.upstream = upstream
        self.max_input_size = max_input_size
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # No idle keep-alive connections to Triton: on SIGTERM it waits for open HTTP connections until its
        # exit timeout, and the supervisor stops it only once nothing is in flight.
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        refusal = self.state.refusal
        if refusal is not None:
            if request.path == HTTP_HEALTH_LIVE:
                # Live while beit-serve runs, Triton restarting or not: a liveness probe must not kill a
                # server that is recovering by itself (beit-serve exits when it gives up).
                return web.Response(status=200)
            # Readiness says no (503, not Triton's 400, so that load balancers drop the backend).
            return _error(503, refusal if _is_readiness(request.path) else f"unavailable: {refusal}")
        self.state.enter()
        try:
            try:
                body = await self._read_body(request)
            except _TooLarge as too_large:
                return await self._refuse_too_large(request, too_large)
            except (aiohttp.http_exceptions.ContentEncodingError, aiohttp.ClientPayloadError) as error:
                return _error(400, f"the request body could not be decompressed: {error}")
            if request.method == "POST" and _INFER_PATH.match(request.path):
                problem = http_infer_problem(body, request.headers.get(INFER_HEADER_LENGTH))
                if problem is not None:
                    return _error(400, problem)
            return await self._forward(request, body)
        finally:
            self.state.leave()

    async def _read_body(self, request: web.Request) -> bytes:
        """The body, inflated if it came compressed (aiohttp's reader inflates gzip and deflate as it
        reads), refused as soon as it passes the limit."""
        limit = self.max_input_size
        if request.content_length is not None and request.content_length > limit:
            raise _TooLarge(request.content_length, exact=True)
        parts: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise _TooLarge(size, exact=False)
            parts.append(chunk)
        return b"".join(parts)

    async def _refuse_too_large(self, request: web.Request, too_large: _TooLarge) -> web.StreamResponse:
        # Read what the client is still sending (up to a bound) so that it reads the answer rather than a
        # reset connection; nothing of it is kept.
        discarded = 0
        while discarded < _DRAIN_LIMIT_FACTOR * self.max_input_size:
            chunk = await request.content.readany()
            if not chunk:
                break
            discarded += len(chunk)
        size = f"{too_large.size} bytes" if too_large.exact else f"over {self.max_input_size} bytes"
        response = _error(
            413,
            f"request body of {size} exceeds the limit of {self.max_input_size} bytes "
            "(beit-serve --http-max-input-size)",
        )
        response.force_close()
        return response

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self._session is not None, "the front door is started"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.pop("Content-Encoding", None)
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=body if body or request.can_read_body else None,
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                status = answer.status
                answer_headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
        except (aiohttp.ClientError, OSError) as error:
            return _error(503, f"unavailable: Triton is not answering ({error!r})")
        if status == 500 and self.state.stub_died():
            return _error(503, f"unavailable: a backend process died and is being restarted: {payload!r}")
        return web.Response(status=status, body=payload, headers=answer_headers)


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=_error_json(message), content_type="application/json")


class GrpcFront(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Forwards every method of Triton's GRPCInferenceService (and the gRPC health service) as raw bytes;
    the server's max_receive_message_length enforces the size limit before any handler runs."""

    def __init__(self, state: ServingState, channel: Any, keys: tuple[Restriction, ...]) -> None:
        self.state = state
        self.channel = channel
        self.key_headers = frozenset(key.header for key in keys)
        self.keys = {method: key for key in keys for method in grpc_methods(key)}

    def service(self, handler_call_details: Any) -> Any:
        method: str = handler_call_details.method
        if method == GRPC_SERVICE + "ModelStreamInfer":
            return grpc.stream_stream_rpc_method_handler(self._stream(method))
        return grpc.unary_unary_rpc_method_handler(self._unary(method))

    def _metadata(self, context: Any) -> list[tuple[str, str | bytes]]:
        forwarded: list[tuple[str, str | bytes]] = []
        for key, value in context.invocation_metadata() or ():
            if key.startswith(":") or key.startswith("grpc-") or key in ("user-agent", "te", "content-type"):
                continue
            forwarded.append((key, value))
            if key in self.key_headers:
                forwarded.append((GRPC_RESTRICTED_PREFIX + key, value))
        return forwarded

    async def _refused(self, method: str, context: Any, refusal: str) -> bytes:
        if method == GRPC_SERVICE + "ServerLive":
            return bytes(service_pb2.ServerLiveResponse(live=True).SerializeToString())
        if method == GRPC_SERVICE + "ServerReady":
            return bytes(service_pb2.ServerReadyResponse(ready=False).SerializeToString())
        if method == GRPC_SERVICE + "ModelReady":
            return bytes(service_pb2.ModelReadyResponse(ready=False).SerializeToString())
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"unavailable: {refusal}")
        raise AssertionError("abort raises")

    async def _abort_with(self, context: Any, error: Any) -> None:
        code, details = error.code(), error.details() or ""
        if code == grpc.StatusCode.INTERNAL and self.state.stub_died():
            code = grpc.StatusCode.UNAVAILABLE
            details = f"unavailable: a backend process died and is being restarted: {details}"
        await context.abort(code, details)

    async def _check_key(self, method: str, context: Any) -> None:
        key = self.keys.get(method)
        if key is None:
            return
        sent = dict(context.invocation_metadata() or ())
        if sent.get(key.header) != key.value and sent.get(GRPC_RESTRICTED_PREFIX + key.header) != key.value:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"This API is restricted, expecting header '{key.header}'"
            )

    def _unary(self, method: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
        call = self.channel.unary_unary(method)

        async def forward(request: bytes, context: Any) -> bytes:
            await self._check_key(method, context)
            problem = grpc_request_problem(method, request)
            if problem is not None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
            refusal = self.state.refusal
            if refusal is not None:
                return await self._refused(method, context, refusal)
            self.state.enter()
            try:
                return bytes(
                    await call(request, metadata=self._metadata(context), timeout=context.time_remaining())
                )
            except grpc.aio.AioRpcError as error:
                await self._abort_with(context, error)
                raise AssertionError("abort raises") from error
            finally:
                self.state.leave()

        return forward

    def _stream(self, method: str) -> Callable[[AsyncIterator[bytes], Any], AsyncIterator[bytes]]:
        call = self.channel.stream_stream(method)

        async def forward(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
            await self._check_key(method, context)
            refusal = self.state.refusal
            if refusal is not None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"unavailable: {refusal}")
            self.state.enter()
            try:
                async for response in call(requests, metadata=self._metadata(context)):
                    yield response
            except grpc.aio.AioRpcError as error:
                await self._abort_with(context, error)
            finally:
                self.state.leave()

        return forward


@dataclass(frozen=True)
class FrontDoorConfig:
    address: str
    http_port: int
    grpc_port: int
    upstream_http_port: int
    upstream_grpc_port: int
    http_max_input_size: int
    grpc_max_input_size: int
    grpc_tls: GrpcTLS | None = None
    keys: tuple[Restriction, ...] = ()
    """The access keys Triton enforces (its restricted APIs): gRPC calls are checked here too."""


class FrontDoor:
    """The two fronts on an asyncio loop of their own, in a background thread."""

    def __init__(self, config: FrontDoorConfig, state: ServingState) -> None:
        self.config = config
        self.state = state
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="beit-gateway", daemon=True)
        self._runner: web.AppRunner | None = None
        self._grpc_server: Any = None
        self._channel: Any = None
        self._http: HttpFront | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        logger.info(
            "front door: HTTP %s:%d, gRPC %s:%d%s -> Triton on 127.0.0.1:%d/%d; limits HTTP %d, gRPC %d B",
            self.config.address,
            self.config.http_port,
            self.config.address,
            self.config.grpc_port,
            " (TLS)" if self.config.grpc_tls else "",
            self.config.upstream_http_port,
            self.config.upstream_grpc_port,
            self.config.http_max_input_size,
            self.config.grpc_max_input_size,
        )

    async def _start(self) -> None:
        config = self.config
        self._http = HttpFront(
            self.state, f"http://127.0.0.1:{config.upstream_http_port}", config.http_max_input_size
        )
        await self._http.start()
        app = web.Application(client_max_size=config.http_max_input_size)
        app.router.add_route("*", "/{tail:.*}", self._http.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, config.address, config.http_port).start()

        unlimited = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{config.upstream_grpc_port}", options=unlimited)
        self._grpc_server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", config.grpc_max_input_size),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),
            ]
        )
        self._grpc_server.add_generic_rpc_handlers((GrpcFront(self.state, self._channel, config.keys),))
        address = f"{config.address}:{config.grpc_port}"
        if config.grpc_tls is not None:
            self._grpc_server.add_secure_port(address, config.grpc_tls.credentials())
        else:
            self._grpc_server.add_insecure_port(address)
        await self._grpc_server.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _stop(self) -> None:
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace=1)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()
        if self._channel is not None:
            await self._channel.close()
