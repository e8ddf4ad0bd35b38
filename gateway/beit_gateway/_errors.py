"""Every error the gateway answers, with its HTTP status and a stable machine-readable code:

    GatewayError                     .status, .code, .headers; answered as JSON (`body`)
    ├── BadRequestError              400 bad_request: the request's JSON or parameters
    │   └── InvalidImagesError       400 invalid_image: one or more images; `.errors` names each by index
    ├── UnauthorizedError            401 unauthorized (with WWW-Authenticate: Bearer)
    ├── ModelNotFoundError           404 model_not_found: /models/{model} names a model not served here
    ├── PayloadTooLargeError         413 payload_too_large: the body, or the number of images
    ├── UnsupportedMediaTypeError    415 unsupported_media_type
    ├── UpstreamError                502 triton_error: Triton failed in a way that is not the caller's
    ├── UpstreamUnavailableError     503 triton_unavailable (with Retry-After): Triton or the model is down
    └── UpstreamTimeoutError         504 triton_timeout: Triton did not answer in time

`ImageError` is one image's failure (its index, a code and the reason); the request that carried it fails
with `InvalidImagesError` holding all of them, so a caller sees every bad image at once, not only the first.

Answers look like this, for both contracts (huggingface_hub shows `error` and each `errors[].message`):

    {"error": "image 1: not valid base64: ...", "code": "invalid_image", "status": 400,
     "request_id": "5f0c...", "errors": [{"index": 1, "code": "invalid_base64", "message": "image 1: ..."}]}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._constants import RETRY_AFTER_S

__all__ = [
    "BadRequestError",
    "GatewayError",
    "ImageError",
    "InvalidImagesError",
    "ModelNotFoundError",
    "PayloadTooLargeError",
    "UnauthorizedError",
    "UnsupportedMediaTypeError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
]


class ImageError(Exception):
    """One image that cannot be classified. `code` says what kind of failure (`invalid_base64`,
    `url_refused`, `invalid_image`, ...), `reason` says why in words."""

    def __init__(self, index: int, code: str, reason: str) -> None:
        super().__init__(f"image {index}: {reason}")
        self.index = index
        self.code = code
        self.reason = reason

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "message": str(self)}


class GatewayError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})

    def body(self, request_id: str | None) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, "status": self.status, "request_id": request_id}


class BadRequestError(GatewayError):
    status = 400
    code = "bad_request"


class InvalidImagesError(BadRequestError):
    code = "invalid_image"

    def __init__(self, errors: Sequence[ImageError], total: int) -> None:
        self.errors = sorted(errors, key=lambda error: error.index)
        if total == 1 or len(self.errors) == 1:
            message = "; ".join(str(error) for error in self.errors)
        else:
            message = f"{len(self.errors)} of {total} images could not be classified: " + "; ".join(
                str(error) for error in self.errors
            )
        super().__init__(message)

    def body(self, request_id: str | None) -> dict[str, Any]:
        return {**super().body(request_id), "errors": [error.as_dict() for error in self.errors]}


class UnauthorizedError(GatewayError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ModelNotFoundError(GatewayError):
    status = 404
    code = "model_not_found"


class PayloadTooLargeError(GatewayError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(GatewayError):
    status = 415
    code = "unsupported_media_type"


class UpstreamError(GatewayError):
    status = 502
    code = "triton_error"


class UpstreamUnavailableError(GatewayError):
    status = 503
    code = "triton_unavailable"

    def __init__(self, message: str, *, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class UpstreamTimeoutError(GatewayError):
    status = 504
    code = "triton_timeout"
