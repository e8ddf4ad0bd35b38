"""HTTP/REST through tritonclient.http (geventhttpclient) and tritonclient.http.aio (aiohttp)."""

from __future__ import annotations

import asyncio
import io
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy.typing as npt
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient

from .._config import ServerURL, TLSConfig
from .._constants import MAX_HTTP_CLIENTS_PER_THREAD
from .._exceptions import ClientClosedError
from ._errors import translate_transport_errors
from .base import AsyncTransport, InferRequest, ModelConfig, Transport, triton_datatype

__all__ = ["AsyncHTTPTransport", "HTTPTransport"]


def _build_inputs(request: InferRequest) -> list[httpclient.InferInput]:
    inputs = []
    for name, array in request.inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), triton_datatype(array))
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    return inputs


def _build_outputs(request: InferRequest) -> list[httpclient.InferRequestedOutput]:
    return [
        httpclient.InferRequestedOutput(output.name, binary_data=True, class_count=output.class_count)
        for output in request.outputs
    ]


def _read_outputs(request: InferRequest, result: Any) -> dict[str, npt.NDArray[Any]]:
    return {output.name: result.as_numpy(output.name) for output in request.outputs}


class _ThreadClients:
    """One thread's tritonclient HTTP clients by timeout, the least recently used first. It lives in the
    thread's local storage, so it goes away with the thread, which closes its clients (`_close_all`)."""

    def __init__(self) -> None:
        self.clients: OrderedDict[float, httpclient.InferenceServerClient] = OrderedDict()


def _close_all(clients: OrderedDict[float, httpclient.InferenceServerClient]) -> None:
    while clients:
        _, client = clients.popitem(last=False)
        client.close()


class HTTPTransport(Transport):
    """tritonclient's HTTP client is not thread safe and takes its timeout when it is made, so each thread
    gets its own client per timeout: at most MAX_HTTP_CLIENTS_PER_THREAD of them, the least recently used
    closed beyond that, and all of a thread's closed when the thread ends."""

    def __init__(self, url: ServerURL, *, timeout: float, tls: TLSConfig | None) -> None:
        self._url = url
        self._timeout = timeout
        self._tls = tls
        self._local = threading.local()
        self._lock = threading.Lock()
        self._closers: list[weakref.finalize[[OrderedDict[float, Any]], _ThreadClients]] = []
        self._closed = False

    def _thread_clients(self) -> OrderedDict[float, httpclient.InferenceServerClient]:
        holder: _ThreadClients | None = getattr(self._local, "holder", None)
        if holder is None:
            holder = self._local.holder = _ThreadClients()
            closer = weakref.finalize(holder, _close_all, holder.clients)
            closer.atexit = False
            with self._lock:
                self._closers = [c for c in self._closers if c.alive]
                self._closers.append(closer)
        return holder.clients

    def _client(self, timeout: float | None) -> httpclient.InferenceServerClient:
        if self._closed:
            raise ClientClosedError("the HTTP transport is closed")
        seconds = self._timeout if timeout is None else timeout
        clients = self._thread_clients()
        client = clients.pop(seconds, None)
        if client is None:
            client = self._new_client(seconds)
        clients[seconds] = client
        while len(clients) > MAX_HTTP_CLIENTS_PER_THREAD:
            _, evicted = clients.popitem(last=False)
            evicted.close()
        return client

    def _new_client(self, seconds: float) -> httpclient.InferenceServerClient:
        tls_options: dict[str, Any] = {}
        if self._url.tls:
            context = (self._tls or TLSConfig()).build_ssl_context()
            tls_options = {"ssl": True, "ssl_context_factory": lambda: context}
        return httpclient.InferenceServerClient(
            self._url.authority, connection_timeout=seconds, network_timeout=seconds, **tls_options
        )

    def infer(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]:
        with translate_transport_errors(request.model, request.request_id, url=self._url):
            result = self._client(request.timeout).infer(
                request.model,
                _build_inputs(request),
                outputs=_build_outputs(request),
                request_id=request.request_id,
                headers=dict(request.headers),
            )
            return _read_outputs(request, result)

    def server_live(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(url=self._url):
            return bool(self._client(timeout).is_server_live(headers=dict(headers)))

    def server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(url=self._url):
            return bool(self._client(timeout).is_server_ready(headers=dict(headers)))

    def model_ready(self, model: str, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(model, url=self._url):
            return bool(self._client(timeout).is_model_ready(model, headers=dict(headers)))

    def model_config(self, model: str, headers: Mapping[str, str], timeout: float | None) -> ModelConfig:
        with translate_transport_errors(model, url=self._url):
            config: ModelConfig = self._client(timeout).get_model_config(model, headers=dict(headers))
            return config

    def close(self) -> None:
        with self._lock:
            self._closed = True
            closers, self._closers = self._closers, []
        for closer in closers:
            closer()


_LARGEST_RAW_BODY = 2**20
"""aiohttp sends a bytes body in one blocking write and warns (ResourceWarning) above this size."""


class _AsyncInferenceServerClient(aiohttpclient.InferenceServerClient):  # type: ignore[misc]
    """tritonclient hands aiohttp every request body as bytes, and a batch of photos is over aiohttp's 1 MiB
    limit for those: aiohttp wrote each such body in one piece on the event loop and raised a ResourceWarning
    (an error under `-W error`). Large bodies go as a file object instead, which aiohttp streams in chunks."""

    async def _post(self, request_uri: str, request_body: Any, headers: Any, query_params: Any) -> Any:
        if isinstance(request_body, (bytes, bytearray)) and len(request_body) > _LARGEST_RAW_BODY:
            request_body = io.BytesIO(request_body)
        return await super()._post(request_uri, request_body, headers, query_params)


class AsyncHTTPTransport(AsyncTransport):
    """aiohttp's session timeout is per client; a per-call timeout is enforced around the await instead."""

    def __init__(self, url: ServerURL, *, timeout: float, tls: TLSConfig | None, concurrency: int) -> None:
        self._url = url
        self._timeout = timeout
        tls_options: dict[str, Any] = {}
        if url.tls:
            tls_options = {"ssl": True, "ssl_context": (tls or TLSConfig()).build_ssl_context()}
        # The session's own limit stays above any per-call timeout the caller may choose.
        self._client = _AsyncInferenceServerClient(
            url.authority, conn_limit=max(concurrency, 1) * 2, conn_timeout=None, **tls_options
        )

    def _seconds(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else timeout

    async def infer(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]:
        with translate_transport_errors(request.model, request.request_id, url=self._url):
            result = await asyncio.wait_for(
                self._client.infer(
                    request.model,
                    _build_inputs(request),
                    outputs=_build_outputs(request),
                    request_id=request.request_id,
                    headers=dict(request.headers),
                ),
                self._seconds(request.timeout),
            )
            return _read_outputs(request, result)

    async def server_live(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(url=self._url):
            live = await asyncio.wait_for(
                self._client.is_server_live(headers=dict(headers)), self._seconds(timeout)
            )
            return bool(live)

    async def server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(url=self._url):
            ready = await asyncio.wait_for(
                self._client.is_server_ready(headers=dict(headers)), self._seconds(timeout)
            )
            return bool(ready)

    async def model_ready(self, model: str, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(model, url=self._url):
            ready = await asyncio.wait_for(
                self._client.is_model_ready(model, headers=dict(headers)), self._seconds(timeout)
            )
            return bool(ready)

    async def model_config(
        self, model: str, headers: Mapping[str, str], timeout: float | None
    ) -> ModelConfig:
        with translate_transport_errors(model, url=self._url):
            config: ModelConfig = await asyncio.wait_for(
                self._client.get_model_config(model, headers=dict(headers)), self._seconds(timeout)
            )
            return config

    async def aclose(self) -> None:
        await self._client.close()
