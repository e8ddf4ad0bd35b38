"""The ASGI app: FastAPI routes for both contracts and operations, on `Gateway`, which does the work without
knowing HTTP.

A classification request goes: auth -> body (size-limited) -> contract parser (`_contracts`) -> each image
read (`_images`) or fetched (`_fetch`) -> one SDK call for all of its images (`_upstream`), which Triton
batches -> the answers in input order, or 400 naming every image that failed and why.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from beit_client import Prediction
from beit_repository.names import CLASSIFY_MODEL

from ._constants import LOGGER_NAME, URL_MAX_CONCURRENCY
from ._contracts import (
    AzureRequest,
    ClassifyRequest,
    HuggingFaceRequest,
    ScoredLabel,
    parse_azure,
    parse_hugging_face,
    scored_labels,
)
from ._errors import (
    BadRequestError,
    GatewayError,
    ImageError,
    InvalidImagesError,
    ModelNotFoundError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    UpstreamUnavailableError,
)
from ._fetch import Resolver, UrlFetcher
from ._images import ImageURL, parse_image_string
from ._metrics import Metrics, endpoint_of
from ._settings import GatewaySettings
from ._upstream import Upstream

__all__ = ["Gateway", "create_app"]

log = logging.getLogger(LOGGER_NAME)

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
_JSON_TYPES = ("application/json",)
_RAW_TYPES = ("application/octet-stream",)
_REQUEST_ID_HEADER = b"x-request-id"
_OFFLOAD_BYTES = 1 << 20
"""Images of more than this many bytes in one request are decoded in a worker thread."""


def _package_version() -> str:
    try:
        return version("beit-triton")
    except PackageNotFoundError:
        return "0"


class Gateway:
    """Classification for both contracts: images as a request gave them in, predictions in input order out."""

    def __init__(self, settings: GatewaySettings, upstream: Upstream, fetcher: UrlFetcher, metrics: Metrics):
        self.settings = settings
        self.upstream = upstream
        self.fetcher = fetcher
        self.metrics = metrics
        self._url_slots = asyncio.Semaphore(URL_MAX_CONCURRENCY)

    async def classify(self, request: ClassifyRequest, endpoint: str) -> list[list[Prediction]]:
        settings = self.settings
        count = len(request.images)
        if count == 0:
            raise BadRequestError("the request holds no images")
        if count > settings.max_images:
            raise PayloadTooLargeError(
                f"{count} images in one request, over the limit of {settings.max_images}"
            )
        top_k = settings.top_k if request.top_k is None else request.top_k
        if top_k > settings.max_top_k:
            raise BadRequestError(f"top_k {top_k} is over this deployment's limit of {settings.max_top_k}")

        read = await self._read_images(request.images)
        failures = [outcome for outcome in read if isinstance(outcome, ImageError)]
        readable = [(index, data) for index, data in enumerate(read) if isinstance(data, bytes)]
        predictions: dict[int, list[Prediction]] = {}
        if readable:
            started = time.perf_counter()
            try:
                outcomes = await self.upstream.classify(
                    [data for _, data in readable], top_k, request.function
                )
            finally:
                self.metrics.triton_latency.observe(time.perf_counter() - started)
            for (index, _), outcome in zip(readable, outcomes, strict=True):
                if isinstance(outcome, ImageError):
                    failures.append(ImageError(index, outcome.code, outcome.reason))
                else:
                    predictions[index] = outcome
        self.metrics.images.labels(endpoint, "classified").inc(len(predictions))
        if failures:
            self.metrics.images.labels(endpoint, "refused").inc(len(failures))
            raise InvalidImagesError(failures, count)
        return [predictions[index] for index in range(count)]

    async def _read_images(self, values: Sequence[object]) -> list[bytes | ImageError]:
        """Each image's bytes (decoded here, fetched for URLs, all URLs at once) or its error."""
        size = sum(len(value) for value in values if isinstance(value, (str, bytes)))
        if size > _OFFLOAD_BYTES:
            # Decoding megabytes of base64 would hold the event loop, and every other request, meanwhile.
            sources = await asyncio.to_thread(self._sources, values)
        else:
            sources = self._sources(values)
        urls = [(index, source) for index, source in enumerate(sources) if isinstance(source, ImageURL)]
        if urls:
            fetched = await asyncio.gather(*(self._fetch(source.url, index) for index, source in urls))
            for (index, _), data in zip(urls, fetched, strict=True):
                sources[index] = data
        read: list[bytes | ImageError] = []
        for source in sources:
            assert not isinstance(source, ImageURL), "every URL was fetched above"
            read.append(source)
        return read

    def _sources(self, values: Sequence[object]) -> list[bytes | ImageURL | ImageError]:
        sources: list[bytes | ImageURL | ImageError] = []
        for index, value in enumerate(values):
            if isinstance(value, ImageError):
                sources.append(value)
            elif isinstance(value, bytes):
                sources.append(self._check_raw(value, index))
            else:
                try:
                    sources.append(parse_image_string(value, index, max_bytes=self.settings.max_image_bytes))
                except ImageError as e:
                    sources.append(e)
        return sources

    async def _fetch(self, url: str, index: int) -> bytes | ImageError:
        if not self.settings.url_inputs:
            return ImageError(index, "url_not_allowed", "this deployment does not fetch image URLs")
        try:
            async with self._url_slots:
                data = await self.fetcher.fetch(url, index)
        except ImageError as e:
            self.metrics.url_fetches.labels("refused" if e.code == "url_refused" else "failed").inc()
            return e
        self.metrics.url_fetches.labels("fetched").inc()
        return data

    def _check_raw(self, data: bytes, index: int) -> bytes | ImageError:
        if not data:
            return ImageError(index, "empty_image", "the body is empty: send the image file as the body")
        if len(data) > self.settings.max_image_bytes:
            return ImageError(
                index,
                "image_too_large",
                f"{len(data)} bytes, over the limit of {self.settings.max_image_bytes}",
            )
        return data


# ---------------------------------------------------------------- HTTP plumbing


def _media_type(request: Request) -> str | None:
    header = request.headers.get("content-type")
    if header is None:
        return None
    media_type = header.split(";", 1)[0].strip().lower()
    return media_type or None


def _is_json(media_type: str | None) -> bool:
    return media_type is not None and (media_type in _JSON_TYPES or media_type.endswith("+json"))


async def _parse(parser: Callable[[bytes], ClassifyRequest], body: bytes) -> ClassifyRequest:
    """`parser(body)`, in a worker thread for a body large enough to hold the event loop."""
    if len(body) > _OFFLOAD_BYTES:
        return await asyncio.to_thread(parser, body)
    return parser(body)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the body is {declared} bytes, over the limit of {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_api_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("this deployment needs an API key: send Authorization: Bearer <key>")
    if not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise UnauthorizedError("the API key is not valid")


def _request_id(scope: MutableMapping[str, Any]) -> str:
    for name, value in scope.get("headers", []):
        if name == _REQUEST_ID_HEADER:
            text = bytes(value).decode("latin-1")
            if 0 < len(text) <= 128 and text.isprintable():
                return text
    return uuid.uuid4().hex


class ObservabilityMiddleware:
    """Request id (the caller's X-Request-ID, or a new one, echoed back), the metrics and one log line per
    request. Pure ASGI: it adds no task or body copy to the request path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = [500]

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (_REQUEST_ID_HEADER, request_id.encode("latin-1"))]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.in_flight.dec()
            seconds = time.perf_counter() - started
            endpoint = endpoint_of(scope["path"])
            error_code = state.get("error_code")
            self.metrics.observe(endpoint, scope["method"], status[0], seconds, error_code)
            if endpoint not in ("/health", "/ready", "/metrics"):
                fields = {
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status[0],
                    "duration_ms": round(seconds * 1000, 2),
                    "images": state.get("images"),
                    "error_code": error_code,
                    "error": state.get("error"),
                }
                level = logging.ERROR if status[0] >= 500 else logging.INFO
                log.log(
                    level, "request", extra={"fields": {k: v for k, v in fields.items() if v is not None}}
                )


def _error_response(request: Request, error: GatewayError) -> JSONResponse:
    request.state.error_code = error.code
    request.state.error = error.message
    return JSONResponse(
        error.body(getattr(request.state, "request_id", None)),
        status_code=error.status,
        headers=error.headers,
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _json_schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _image_body_schema() -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": "The image file, as it is."}


def create_app(settings: GatewaySettings, *, resolver: Resolver | None = None) -> FastAPI:
    """The gateway for `settings`. It connects to Triton when it starts (lifespan), not before: it starts
    and answers /health while Triton is down, and /ready says when both are up. `resolver` replaces the
    system's DNS resolver for image URLs (tests)."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upstream = Upstream(
            settings.triton_url, timeout_s=settings.triton_timeout_s, retry_after_s=settings.retry_after_s
        )
        fetcher = UrlFetcher(settings.url_policy, resolver)
        app.state.gateway = Gateway(settings, upstream, fetcher, metrics)
        log.info(
            "started",
            extra={
                "fields": {
                    "triton_url": str(upstream.url),
                    "top_k": settings.top_k,
                    "api_key": settings.api_key is not None,
                    "url_inputs": settings.url_inputs,
                    "url_allow": [str(network) for network in settings.url_allow],
                }
            },
        )
        try:
            yield
        finally:
            await upstream.aclose()
            await fetcher.aclose()

    app = FastAPI(
        title="beit-gateway",
        version=_package_version(),
        description="Azure ML and Hugging Face Inference API compatible image classification, served by the "
        "BEiT ensemble on Triton Inference Server.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)

    def gateway_of(request: Request) -> Gateway:
        gateway: Gateway = request.app.state.gateway
        return gateway

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, GatewayError)
        return _error_response(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        answer = GatewayError(str(error.detail), headers=error.headers)
        answer.status = error.status_code
        answer.code = _HTTP_CODES.get(error.status_code, "http_error")
        return _error_response(request, answer)

    @app.get("/health", summary="Liveness: the gateway process answers", tags=["operations"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        summary="Readiness: Triton and the model are ready",
        tags=["operations"],
        responses={503: {"description": "Triton or the model is not ready; see Retry-After"}},
    )
    async def ready(request: Request) -> Response:
        gateway = gateway_of(request)
        if not await gateway.upstream.ready():
            raise UpstreamUnavailableError(
                f"Triton at {gateway.upstream.url} or its model {CLASSIFY_MODEL!r} is not ready",
                retry_after_s=settings.retry_after_s,
            )
        info = await gateway.upstream.model_info()
        return JSONResponse(
            {
                "status": "ready",
                "triton_url": str(gateway.upstream.url),
                "model": CLASSIFY_MODEL,
                "checkpoint": info.checkpoint,
                "labels": info.num_labels,
                "multi_label": info.multi_label,
            }
        )

    @app.get("/metrics", summary="Prometheus metrics", tags=["operations"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/score",
        summary="Azure ML online endpoint: classify images",
        tags=["Azure ML"],
        response_model=list[list[ScoredLabel]],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _json_schema_ref("AzureRequest")}},
            },
        },
        responses={
            400: {
                "description": "Invalid JSON or parameters, or images that cannot be classified (each named)"
            },
            401: {"description": "Missing or wrong API key"},
            413: {"description": "Body or image count over the limit"},
            415: {"description": "Not application/json"},
            503: {"description": "Triton unavailable; see Retry-After"},
            504: {"description": "Triton did not answer in time"},
        },
    )
    async def score(request: Request) -> Response:
        gateway = gateway_of(request)
        _check_api_key(request, settings.api_key)
        media_type = _media_type(request)
        if media_type is not None and not _is_json(media_type):
            raise UnsupportedMediaTypeError(f"send application/json, not {media_type}")
        parsed = await _parse(parse_azure, await _read_body(request, settings.max_body_bytes))
        request.state.images = len(parsed.images)
        predictions = await gateway.classify(parsed, "/score")
        return JSONResponse([scored_labels(image) for image in predictions])

    @app.post(
        "/models/{model}",
        summary="Hugging Face Inference API: classify one image",
        tags=["Hugging Face"],
        response_model=list[ScoredLabel],
        openapi_extra={
            "parameters": [
                {
                    "name": "model",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": [CLASSIFY_MODEL]},
                    "description": "The served model's name",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "image/*": {"schema": _image_body_schema()},
                    "application/octet-stream": {"schema": _image_body_schema()},
                    "application/json": {"schema": _json_schema_ref("HuggingFaceRequest")},
                },
            },
        },
        responses={
            400: {"description": "Invalid JSON or parameters, or an image that cannot be classified"},
            401: {"description": "Missing or wrong API key"},
            404: {"description": f"Not the served model ({CLASSIFY_MODEL!r})"},
            413: {"description": "Body over the limit"},
            415: {"description": "Neither an image, application/octet-stream nor application/json"},
            503: {"description": "Triton unavailable; see Retry-After"},
            504: {"description": "Triton did not answer in time"},
        },
    )
    async def hugging_face(request: Request) -> Response:
        gateway = gateway_of(request)
        _check_api_key(request, settings.api_key)
        model = request.path_params["model"]
        if model != CLASSIFY_MODEL:
            raise ModelNotFoundError(f"model {model!r} is not served here; use /models/{CLASSIFY_MODEL}")
        media_type = _media_type(request)
        if _is_json(media_type):
            parsed = await _parse(parse_hugging_face, await _read_body(request, settings.max_body_bytes))
        elif media_type is None or media_type in _RAW_TYPES or media_type.startswith("image/"):
            parsed = ClassifyRequest([await _read_body(request, settings.max_body_bytes)])
        else:
            raise UnsupportedMediaTypeError(
                "send the image file (Content-Type: image/*), application/octet-stream, or "
                f"application/json; not {media_type}"
            )
        request.state.images = 1
        (predictions,) = await gateway.classify(parsed, "/models/{model}")
        return JSONResponse(scored_labels(predictions))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (AzureRequest, HuggingFaceRequest):
                model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(model_schema.pop("$defs", {}))
                components[model.__name__] = model_schema
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
