"""The one place where errors from tritonclient and the libraries under it (geventhttpclient, aiohttp,
grpc) become `BeitClientError`s. Decisions rest on status codes and exception types, never on message text.

Triton answers HTTP with 400 for INVALID_ARG (and UNKNOWN, ALREADY_EXISTS, CANCELLED), 404 NOT_FOUND,
500 INTERNAL, 501 UNSUPPORTED, 503 UNAVAILABLE (server `src/http_server.cc::HttpCodeFromError`); gRPC
carries the matching `grpc.StatusCode`, which tritonclient reports as the string "StatusCode.NAME". Errors
report the first as an int (400) and the second by its name ("INVALID_ARGUMENT")."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import gevent
from geventhttpclient.response import HTTPConnectionClosed
from tritonclient.utils import InferenceServerException

from .._exceptions import (
    BeitClientError,
    InvalidRequestError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
)

__all__ = ["error_for_status", "status_code", "translate_transport_errors"]

_ERRORS_BY_STATUS: dict[int | str, type[BeitClientError]] = {
    400: InvalidRequestError,
    401: InvalidRequestError,
    403: InvalidRequestError,
    404: ModelNotFoundError,
    408: RequestTimeoutError,
    413: InvalidRequestError,
    429: ServerUnavailableError,
    500: ServerError,
    501: InvalidRequestError,
    502: ServerUnavailableError,
    503: ServerUnavailableError,
    504: RequestTimeoutError,
    "INVALID_ARGUMENT": InvalidRequestError,
    "ALREADY_EXISTS": InvalidRequestError,
    "FAILED_PRECONDITION": InvalidRequestError,
    "OUT_OF_RANGE": InvalidRequestError,
    "UNIMPLEMENTED": InvalidRequestError,
    "UNAUTHENTICATED": InvalidRequestError,
    "PERMISSION_DENIED": InvalidRequestError,
    # gRPC says RESOURCE_EXHAUSTED for a message over the size limit: resending cannot help.
    "RESOURCE_EXHAUSTED": InvalidRequestError,
    "NOT_FOUND": ModelNotFoundError,
    "UNAVAILABLE": ServerUnavailableError,
    "DEADLINE_EXCEEDED": RequestTimeoutError,
    "INTERNAL": ServerError,
    "UNKNOWN": ServerError,
    "DATA_LOSS": ServerError,
    "CANCELLED": ServerError,
}
_GRPC_STATUS_PREFIX = "StatusCode."

_TIMEOUT_TYPES: tuple[type[BaseException], ...] = (
    TimeoutError,
    socket.timeout,
    asyncio.TimeoutError,
    gevent.Timeout,
    aiohttp.ServerTimeoutError,
)
# Raised when no answer came at all: refused, reset, DNS failure, closed mid-response. geventhttpclient's
# HTTPConnectionClosed (an http.client.HTTPException, not an OSError) is a server closing the connection
# before answering, as Triton 2.51 does to new HTTP requests once it is shutting down.
_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    HTTPConnectionClosed,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
)


def status_code(status: str | None) -> int | str | None:
    """A tritonclient status as errors report it: HTTP "400" becomes 400, gRPC "StatusCode.NOT_FOUND" becomes
    "NOT_FOUND"."""
    if status is None:
        return None
    if status.isdigit():
        return int(status)
    return status.removeprefix(_GRPC_STATUS_PREFIX)


def error_for_status(code: int | str | None) -> type[BeitClientError]:
    """The SDK error for a status code as `status_code` gives it; ServerError for any other."""
    if code is None:
        return ServerError
    return _ERRORS_BY_STATUS.get(code, ServerError)


@contextmanager
def translate_transport_errors(model: str | None = None, request_id: str | None = None) -> Iterator[None]:
    """Wraps every transport call, sync or async (the body may await). The errors raised carry `model` and
    `request_id`, the facts of the request the transport was sending."""
    try:
        yield
    except BeitClientError:
        raise
    except InferenceServerException as e:
        code = status_code(e.status())
        error = error_for_status(code)
        raise error(
            f"{e.message()} (status {code})", status_code=code, model=model, request_id=request_id
        ) from e
    except _TIMEOUT_TYPES as e:
        raise RequestTimeoutError(f"request timed out: {e!r}", model=model, request_id=request_id) from e
    except _UNAVAILABLE_TYPES as e:
        raise ServerUnavailableError(f"server unreachable: {e!r}", model=model, request_id=request_id) from e
