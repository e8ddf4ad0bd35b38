"""Errors raised by the SDK, all rooted at `BeitClientError`:

    BeitClientError                  .status_code, .model, .request_id: each None when unknown
    ├── ClientClosedError            a call on a closed client (or on a `with_options` copy of one)
    ├── EvaluationError              an evaluation that cannot run: its dataset unreadable or naming labels
    │                                the server does not serve (listed in `.unmapped`), or its results
    │                                file holding another evaluation
    ├── TransientError               worth retrying; retried with backoff before it reaches the caller
    │   ├── ServerUnavailableError   no answer (refused, reset) or HTTP 503 / gRPC UNAVAILABLE
    │   └── RequestTimeoutError      connect or read timed out, gRPC DEADLINE_EXCEEDED
    └── PermanentError               the same request would fail again
        ├── InvalidRequestError      HTTP 400 / gRPC INVALID_ARGUMENT and other refusals of the request
        │   └── InvalidImageError    one image of the caller's input; `.index` says which
        ├── ModelNotFoundError       HTTP 404 / gRPC NOT_FOUND
        ├── ModelNotReadyError       the server is live but the model stayed unready through every retry
        └── ServerError              HTTP 500 / gRPC INTERNAL, and anything not classified above

What a caller may branch on or log is an attribute of every error:

- `status_code`: the server's answer, as the protocol states it: the HTTP status as an int (`400`), or the
  gRPC status name as a str (`"INVALID_ARGUMENT"`). None when no answer came (refused, timed out) or the
  error arose in this process (an unreadable file, a closed client).
- `model`: the Triton model the request was for (`"beit"`, `"beit_embedding"`, `"beit_model"`).
- `request_id`: the id the SDK sent with the infer request (Triton echoes it as the answer's `id`), one per
  request and kept across its retries. None for other calls (health, model config) and for images refused
  before any request was sent.

Errors from `tritonclient` and the libraries under it become these in one place,
`beit_client._transports._errors.translate_transport_errors`, which keeps the original as `__cause__`.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BeitClientError",
    "ClientClosedError",
    "EvaluationError",
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

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | str | None = None,
        model: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.model = model
        self.request_id = request_id


class ClientClosedError(BeitClientError):
    pass


class EvaluationError(BeitClientError):
    """An evaluation that cannot run: its dataset is unreadable or malformed, names labels the server does
    not serve (`unmapped` holds those names; it is empty for the other reasons), or its results file holds
    another evaluation's results."""

    def __init__(self, message: str, *, unmapped: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.unmapped = tuple(unmapped)


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

    def __init__(
        self,
        message: str,
        *,
        index: int,
        source: str,
        status_code: int | str | None = None,
        model: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            f"image {index} ({source}): {message}",
            status_code=status_code,
            model=model,
            request_id=request_id,
        )
        self.index = index
        self.source = source
        self.reason = message

    def __reduce__(self) -> tuple[object, ...]:
        # Required keyword-only arguments do not survive pickling (process pools) without this; the other
        # attributes come back with the instance's dict.
        return (_rebuild_invalid_image_error, (self.reason, self.index, self.source), self.__dict__)


def _rebuild_invalid_image_error(message: str, index: int, source: str) -> InvalidImageError:
    return InvalidImageError(message, index=index, source=source)


class ModelNotFoundError(PermanentError):
    pass


class ModelNotReadyError(PermanentError):
    pass


class ServerError(PermanentError):
    pass
