"""The interface every transport implements, sync and async, name for name.

A transport sends one request and returns its raw tensors or raises a `BeitClientError` (translated by
`_errors.translate_transport_errors`). It knows nothing of images, labels, chunking or retries."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from uuid import uuid4

import numpy as np
import numpy.typing as npt

__all__ = ["AsyncTransport", "InferRequest", "ModelConfig", "RequestedOutput", "Tensors", "Transport"]

Tensors = Mapping[str, npt.NDArray[Any]]
"""Tensors by name: BYTES as numpy object arrays of `bytes`, UINT8 pixels as uint8 arrays, FP32 as float32
arrays."""
ModelConfig = dict[str, Any]
"""A model's configuration in Triton's JSON form (snake_case keys, as the HTTP endpoint returns it)."""


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    class_count: int = 0
    """Non-zero asks Triton's classification extension for the top `class_count` as "score:index:label"."""


def new_request_id() -> str:
    return uuid4().hex


@dataclass(frozen=True)
class InferRequest:
    model: str
    inputs: Tensors
    outputs: tuple[RequestedOutput, ...]
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float | None = None
    """Seconds; None means the transport's default."""
    request_id: str = field(default_factory=new_request_id)
    """Sent as the request's `id`, which Triton echoes in its answer; the errors of the request carry it."""

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def triton_datatype(array: npt.NDArray[Any]) -> str:
    if array.dtype == np.object_:
        return "BYTES"
    if array.dtype == np.uint8:
        return "UINT8"
    if array.dtype == np.float32:
        return "FP32"
    raise TypeError(f"no Triton datatype for {array.dtype}")


class Transport(ABC):
    @abstractmethod
    def infer(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]: ...

    @abstractmethod
    def server_live(self, headers: Mapping[str, str], timeout: float | None) -> bool: ...

    @abstractmethod
    def server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool: ...

    @abstractmethod
    def model_ready(self, model: str, headers: Mapping[str, str], timeout: float | None) -> bool: ...

    @abstractmethod
    def model_config(self, model: str, headers: Mapping[str, str], timeout: float | None) -> ModelConfig: ...

    def close(self) -> None:
        return None

    def __enter__(self) -> Transport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncTransport(ABC):
    @abstractmethod
    async def infer(self, request: InferRequest) -> dict[str, npt.NDArray[Any]]: ...

    @abstractmethod
    async def server_live(self, headers: Mapping[str, str], timeout: float | None) -> bool: ...

    @abstractmethod
    async def server_ready(self, headers: Mapping[str, str], timeout: float | None) -> bool: ...

    @abstractmethod
    async def model_ready(self, model: str, headers: Mapping[str, str], timeout: float | None) -> bool: ...

    @abstractmethod
    async def model_config(
        self, model: str, headers: Mapping[str, str], timeout: float | None
    ) -> ModelConfig: ...

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> AsyncTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
