"""Typed Python SDK for the BEiT classifier served on Triton: `BeitClient` and `AsyncBeitClient`."""

from ._client import AsyncBeitClient, BeitClient
from ._config import RequestOptions, RetryPolicy, ServerURL, TLSConfig
from ._exceptions import (
    BeitClientError,
    ClientClosedError,
    InvalidImageError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelNotReadyError,
    PermanentError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    TransientError,
)
from ._models import ModelInfo, Prediction
from ._transports import (
    AsyncMockTransport,
    AsyncTransport,
    InferRequest,
    MockTransport,
    RequestedOutput,
    Transport,
)
from ._types import ImageEncoding, ImageInput, ImagesInput, PreprocessMode

__all__ = [
    "AsyncBeitClient",
    "AsyncMockTransport",
    "AsyncTransport",
    "BeitClient",
    "BeitClientError",
    "ClientClosedError",
    "ImageEncoding",
    "ImageInput",
    "ImagesInput",
    "InferRequest",
    "InvalidImageError",
    "InvalidRequestError",
    "MockTransport",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "PermanentError",
    "Prediction",
    "PreprocessMode",
    "RequestOptions",
    "RequestTimeoutError",
    "RequestedOutput",
    "RetryPolicy",
    "ServerError",
    "ServerURL",
    "ServerUnavailableError",
    "TLSConfig",
    "TransientError",
    "Transport",
]
