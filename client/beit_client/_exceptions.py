"""Errors raised by the SDK, all rooted at `BeitClientError`:

    BeitClientError
    ├── TransientError               worth retrying; retried with backoff before it reaches the caller
    │   ├── ServerUnavailableError   no answer (refused, reset) or HTTP 503 / gRPC UNAVAILABLE
    │   └── RequestTimeoutError      connect or read timed out, gRPC DEADLINE_EXCEEDED
    └── PermanentError               the same request would fail again
        ├── InvalidRequestError      HTTP 400 / gRPC INVALID_ARGUMENT and other refusals of the request
        │   └── InvalidImageError    one image of the caller's input; `.index` says which
        ├── ModelNotFoundError       HTTP 404 / gRPC NOT_FOUND
        ├── ModelNotReadyError       the server is live but the model stayed unready through every retry
        └── ServerError              HTTP 500 / gRPC INTERNAL, and anything not classified above

Errors from `tritonclient` and the libraries under it become these in one place,
`beit_client._transports._errors.translate_transport_errors`, which keeps the original as `__cause__`.
"""

from __future__ import annotations

__all__ = [
    "BeitClientError",
    "InvalidImageError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "PermanentError",
    "RequestTimeoutError",
    "ServerError",
    "ServerUnavailableError",
    "TransientError",
]


class BeitClientError(Exception):
    """Root of every error the SDK raises."""


class TransientError(BeitClientError):
    pass


class ServerUnavailableError(TransientError):
    pass


class RequestTimeoutError(TransientError):
    pass


class PermanentError(BeitClientError):
    pass


class InvalidRequestError(PermanentError):
    pass


class InvalidImageError(InvalidRequestError):
    """An image that could not be read, encoded or classified. `index` is its position in the caller's input
    (0 for a single image) and `source` describes it (a path, a URL, or its type)."""

    def __init__(self, message: str, *, index: int, source: str) -> None:
        super().__init__(f"image {index} ({source}): {message}")
        self.index = index
        self.source = source
        self.reason = message

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive pickling (process pools) without this.
        return (_rebuild_invalid_image_error, (self.reason, self.index, self.source))


def _rebuild_invalid_image_error(message: str, index: int, source: str) -> InvalidImageError:
    return InvalidImageError(message, index=index, source=source)


class ModelNotFoundError(PermanentError):
    pass


class ModelNotReadyError(PermanentError):
    pass


class ServerError(PermanentError):
    pass
