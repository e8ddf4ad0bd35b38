"""The one place where errors from tritonclient and the libraries under it (geventhttpclient, aiohttp,
grpc) become `BeitClientError`s. Decisions rest on status codes and exception types, never on message text.

Triton answers HTTP with 400 for INVALID_ARG (and UNKNOWN, ALREADY_EXISTS, CANCELLED), 404 NOT_FOUND,
500 INTERNAL, 501 UNSUPPORTED, 503 UNAVAILABLE (server `src/http_server.cc::HttpCodeFromError`); gRPC
carries the matching `grpc.StatusCode`, which tritonclient reports as the string "StatusCode.NAME"."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import gevent
from tritonclient.utils import InferenceServerException

from .._exceptions import (
    BeitClientError,
    InvalidRequestError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
)

__all__ = ["error_for_status", "translate_transport_errors"]

_ERRORS_BY_STATUS: dict[str, type[BeitClientError]] = {
    "400": InvalidRequestError,
    "401": InvalidRequestError,
    "403": InvalidRequestError,
    "404": ModelNotFoundError,
    "408": RequestTimeoutError,
    "413": InvalidRequestError,
    "429": ServerUnavailableError,
    "500": ServerError,
    "501": InvalidRequestError,
    "502": ServerUnavailableError,
    "503": ServerUnavailableError,
    "504": RequestTimeoutError,
    "StatusCode.INVALID_ARGUMENT": InvalidRequestError,
    "StatusCode.ALREADY_EXISTS": InvalidRequestError,
    "StatusCode.FAILED_PRECONDITION": InvalidRequestError,
    "StatusCode.OUT_OF_RANGE": InvalidRequestError,
    "StatusCode.UNIMPLEMENTED": InvalidRequestError,
    "StatusCode.UNAUTHENTICATED": InvalidRequestError,
    "StatusCode.PERMISSION_DENIED": InvalidRequestError,
    # gRPC says RESOURCE_EXHAUSTED for a message over the size limit: resending cannot help.
    "StatusCode.RESOURCE_EXHAUSTED": InvalidRequestError,
    "StatusCode.NOT_FOUND": ModelNotFoundError,
    "StatusCode.UNAVAILABLE": ServerUnavailableError,
    "StatusCode.DEADLINE_EXCEEDED": RequestTimeoutError,
    "StatusCode.INTERNAL": ServerError,
    "StatusCode.UNKNOWN": ServerError,
    "StatusCode.DATA_LOSS": ServerError,
    "StatusCode.CANCELLED": ServerError,
}

_TIMEOUT_TYPES: tuple[type[BaseException], ...] = (
    TimeoutError,
    socket.timeout,
    asyncio.TimeoutError,
    gevent.Timeout,
    aiohttp.ServerTimeoutError,
)
# Raised when no answer came at all: refused, reset, DNS failure, closed mid-response.
_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
)


def error_for_status(status: str | None) -> type[BeitClientError]:
    """The SDK error for a tritonclient status: HTTP ("400") or gRPC ("StatusCode.NOT_FOUND")."""
    if status is None:
        return ServerError
    return _ERRORS_BY_STATUS.get(status, ServerError)


@contextmanager
def translate_transport_errors() -> Iterator[None]:
    """Wraps every transport call, sync or async (the body may await)."""
    try:
        yield
    except BeitClientError:
        raise
    except InferenceServerException as e:
        status = e.status()
        error = error_for_status(status)
        raise error(f"{e.message()} (status {status})") from e
    except _TIMEOUT_TYPES as e:
        raise RequestTimeoutError(f"request timed out: {e!r}") from e
    except _UNAVAILABLE_TYPES as e:
        raise ServerUnavailableError(f"server unreachable: {e!r}") from e
