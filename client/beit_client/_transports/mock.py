"""In-memory transports for tests: a handler function plays the server.

The handler receives each `InferRequest` and returns its output tensors, or raises what tritonclient would
(`tritonclient.utils.InferenceServerException(msg, status="400")`, `ConnectionRefusedError`, ...): the mock
runs it under the same error translation as the real transports."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import numpy.typing as npt
from tritonclient.utils import InferenceServerException

from ._errors import translate_transport_errors
from .base import AsyncTransport, InferRequest, ModelConfig, Tensors, Transport

__all__ = ["AsyncMockTransport", "MockTransport"]

Handler = Callable[[InferRequest], Tensors | Awaitable[Tensors]]


class _FakeServerState:
    def __init__(
        self,
        handler: Handler,
        model_configs: Mapping[str, ModelConfig] | None,
        live: bool,
        ready_models: set[str] | None,
    ) -> None:
        self.handler = handler
        self.model_configs = dict(model_configs or {})
        self.live = live
        self.ready_models = set(self.model_configs) if ready_models is None else ready_models
        self.requests: list[InferRequest] = []
        """Every infer request received, in arrival order."""

    def config(self, model: str) -> ModelConfig:
        if model not in self.model_configs:
            raise InferenceServerException(f"Request for unknown model: '{model}' is not found", status="404")
        return self.model_configs[model]


class MockTransport(Transport):
    def __init__(
        self,
        handler: Callable[[InferRequest], Tensors],
        *,
        model_configs: Mapping[str, ModelConfig] | None = None,
        live: bool = True,
        ready_models: set[str] | None = None,
    ) -> None:
        self.state = _FakeServerState(handler, model_configs, live, ready_models)

    @property
    def requests(self) -> list[InferRequest]:
        return self.state.requests

    def infer(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]:
        self.state.requests.append(request)
        with translate_transport_errors(request.model, request.request_id):
            outputs = self.state.handler(request)
            assert not inspect.isawaitable(outputs), "MockTransport needs a synchronous handler"
            return dict(outputs)

    def server_live(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        return self.state.live

    def server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        return self.state.live and self.state.ready_models >= set(self.state.model_configs)

    def model_ready(self, model: str, headers: Mapping[str, str], timeout: float | None) -> bool:
        return model in self.state.ready_models

    def model_config(self, model: str, headers: Mapping[str, str], timeout: float | None) -> ModelConfig:
        with translate_transport_errors(model):
            return self.state.config(model)


class AsyncMockTransport(AsyncTransport):
    """The handler may be a plain function or a coroutine function."""

    def __init__(
        self,
        handler: Handler,
        *,
        model_configs: Mapping[str, ModelConfig] | None = None,
        live: bool = True,
        ready_models: set[str] | None = None,
    ) -> None:
        self.state = _FakeServerState(handler, model_configs, live, ready_models)

    @property
    def requests(self) -> list[InferRequest]:
        return self.state.requests

    async def infer(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]:
        self.state.requests.append(request)
        with translate_transport_errors(request.model, request.request_id):
            outputs = self.state.handler(request)
            if inspect.isawaitable(outputs):
                outputs = await outputs
            return dict(outputs)

    async def server_live(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        return self.state.live

    async def server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool:
        return self.state.live and self.state.ready_models >= set(self.state.model_configs)

    async def model_ready(self, model: str, headers: Mapping[str, str], timeout: float | None) -> bool:
        return model in self.state.ready_models

    async def model_config(
        self, model: str, headers: Mapping[str, str], timeout: float | None
    ) -> ModelConfig:
        with translate_transport_errors(model):
            return self.state.config(model)
