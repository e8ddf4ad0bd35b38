"""gRPC through tritonclient.grpc and tritonclient.grpc.aio; both take a timeout per call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient

from .._config import ServerURL, TLSConfig
from ._errors import translate_transport_errors
from .base import AsyncTransport, InferRequest, ModelConfig, Transport, triton_datatype

__all__ = ["AsyncGRPCTransport", "GRPCTransport"]


def _client_options(url: ServerURL, tls: TLSConfig | None) -> dict[str, Any]:
    if not url.tls:
        return {}
    tls = tls or TLSConfig()
    return {
        "ssl": True,
        "root_certificates": tls.root_certificates,
        "private_key": tls.private_key,
        "certificate_chain": tls.certificate_chain,
    }


def _metadata(headers: Mapping[str, str]) -> dict[str, str]:
    # gRPC refuses metadata keys with capitals ("Authorization"), HTTP does not care.
    return {key.lower(): value for key, value in headers.items()}


def _build_inputs(request: InferRequest) -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in request.inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), triton_datatype(array))
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _build_outputs(request: InferRequest) -> list[grpcclient.InferRequestedOutput]:
    return [grpcclient.InferRequestedOutput(o.name, class_count=o.class_count) for o in request.outputs]


def _read_outputs(request: InferRequest, result: Any) -> dict[str, npt.NDArray[Any]]:
    return {output.name: result.as_numpy(output.name) for output in request.outputs}


class GRPCTransport(Transport):
    """tritonclient's gRPC client is thread safe: one channel serves every thread."""

    def __init__(self, url: ServerURL, *, timeout: float, tls: TLSConfig | None) -> None:
        self._url = url
        self._timeout = timeout
        self._client = grpcclient.InferenceServerClient(url.authority, **_client_options(url, tls))

    def _seconds(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else timeout

    def infer(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]:
        with translate_transport_errors(request.model, request.request_id, url=self._url):
            result = self._client.infer(
                request.model,
                _build_inputs(request),
                outputs=_build_outputs(request),
                request_id=request.request_id,
                headers=_metadata(request.headers),
                client_timeout=self._seconds(request.timeout),
            )
            return _read_outputs(request, result)

    def server_live(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(url=self._url):
            live = self._client.is_server_live(
                headers=_metadata(headers), client_timeout=self._seconds(timeout)
            )
            return bool(live)

    def server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(url=self._url):
            ready = self._client.is_server_ready(
                headers=_metadata(headers), client_timeout=self._seconds(timeout)
            )
            return bool(ready)

    def model_ready(self, model: str, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(model, url=self._url):
            ready = self._client.is_model_ready(
                model, headers=_metadata(headers), client_timeout=self._seconds(timeout)
            )
            return bool(ready)

    def model_config(self, model: str, headers: Mapping[str, str], timeout: float | None) -> ModelConfig:
        with translate_transport_errors(model, url=self._url):
            response = self._client.get_model_config(
                model, headers=_metadata(headers), as_json=True, client_timeout=self._seconds(timeout)
            )
            config: ModelConfig = response["config"]
            return config

    def close(self) -> None:
        # tritonclient's __del__ closes its channel a second time. Under grpc's gevent integration (Locust's
        # gRPC users) a channel closed while the interpreter exits can deadlock on a lock that grpc's
        # stopped poller thread still holds, so the client is released now, while the event loop runs.
        client = self.__dict__.pop("_client", None)
        if client is not None:
            client.close()


class AsyncGRPCTransport(AsyncTransport):
    def __init__(self, url: ServerURL, *, timeout: float, tls: TLSConfig | None) -> None:
        self._url = url
        self._timeout = timeout
        self._client = aiogrpcclient.InferenceServerClient(url.authority, **_client_options(url, tls))

    def _seconds(self, timeout: float | None) -> float:
        return self._timeout if timeout is None else timeout

    async def infer(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]:
        with translate_transport_errors(request.model, request.request_id, url=self._url):
            result = await self._client.infer(
                request.model,
                _build_inputs(request),
                outputs=_build_outputs(request),
                request_id=request.request_id,
                headers=_metadata(request.headers),
                client_timeout=self._seconds(request.timeout),
            )
            return _read_outputs(request, result)

    async def server_live(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(url=self._url):
            live = await self._client.is_server_live(
                headers=_metadata(headers), client_timeout=self._seconds(timeout)
            )
            return bool(live)

    async def server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(url=self._url):
            ready = await self._client.is_server_ready(
                headers=_metadata(headers), client_timeout=self._seconds(timeout)
            )
            return bool(ready)

    async def model_ready(self, model: str, headers: Mapping[str, str], timeout: float | None) -> bool:
        with translate_transport_errors(model, url=self._url):
            ready = await self._client.is_model_ready(
                model, headers=_metadata(headers), client_timeout=self._seconds(timeout)
            )
            return bool(ready)

    async def model_config(
        self, model: str, headers: Mapping[str, str], timeout: float | None
    ) -> ModelConfig:
        with translate_transport_errors(model, url=self._url):
            response = await self._client.get_model_config(
                model, headers=_metadata(headers), as_json=True, client_timeout=self._seconds(timeout)
            )
            config: ModelConfig = response["config"]
            return config

    async def aclose(self) -> None:
        await self._client.close()
