"""beit-gateway: Azure ML online-endpoint and Hugging Face Inference API compatible REST endpoints in front of
the BEiT ensemble on Triton, which it calls through the SDK's asyncio gRPC client."""

from ._app import Gateway, create_app
from ._errors import (
    BadRequestError,
    GatewayError,
    ImageError,
    InvalidImagesError,
    ModelNotFoundError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from ._fetch import METADATA_ADDRESSES, Resolver, SystemResolver, UrlFetcher, UrlPolicy, refusal
from ._settings import GatewaySettings

__all__ = [
    "BadRequestError",
    "Gateway",
    "GatewayError",
    "GatewaySettings",
    "ImageError",
    "InvalidImagesError",
    "METADATA_ADDRESSES",
    "ModelNotFoundError",
    "PayloadTooLargeError",
    "Resolver",
    "SystemResolver",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "UrlFetcher",
    "UrlPolicy",
    "create_app",
    "refusal",
]
