"""Typed Python SDK for the BEiT classifier served on Triton: `BeitClient` and `AsyncBeitClient`."""

from ._client import AsyncBeitClient, BeitClient
from ._config import RequestOptions, RetryPolicy, ServerURL, TLSConfig
from ._datasets import LabeledImage
from ._exceptions import (
    BeitClientError,
    ClientClosedError,
    EvaluationError,
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
from ._models import (
    ClassMetrics,
    ConfusedPair,
    EvaluationFailure,
    EvaluationReport,
    ModelInfo,
    Prediction,
)
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
    "ClassMetrics",
    "ClientClosedError",
    "ConfusedPair",
    "EvaluationError",
    "EvaluationFailure",
    "EvaluationReport",
    "ImageEncoding",
    "ImageInput",
    "ImagesInput",
    "InferRequest",
    "InvalidImageError",
    "InvalidRequestError",
    "LabeledImage",
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
