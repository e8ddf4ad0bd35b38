"""The one place where errors from tritonclient and the libraries under it (geventhttpclient, aiohttp,
grpc) become `BeitClientError`s. Decisions rest on status codes and exception types, never on message text.

Triton answers HTTP with 400 for INVALID_ARG (and UNKNOWN, ALREADY_EXISTS, CANCELLED), 404 NOT_FOUND,
500 INTERNAL, 501 UNSUPPORTED, 503 UNAVAILABLE (server `src/http_server.cc::HttpCodeFromError`); gRPC
carries the matching `grpc.StatusCode`, which tritonclient reports as the string "StatusCode.NAME". Errors
report the first as an int (400) and the second by its name ("INVALID_ARGUMENT").

Messages are one line for a person: the server's own words for a refusal; for an unreachable server, or one
that answers in another protocol (a scheme/port mix-up), the URL tried and the likely fix."""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import gevent
import rapidjson
from geventhttpclient.response import HTTPConnectionClosed
from tritonclient.utils import InferenceServerException

from .._config import ServerURL
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
# An answer that is not HTTP (geventhttpclient's HTTPParseError, aiohttp's "Bad status line"): something
# else listens there, a gRPC port most likely.
_NOT_HTTP_TYPES: tuple[type[BaseException], ...] = (http.client.HTTPException, aiohttp.ClientResponseError)
# An HTTP answer without the JSON body Triton's API sends (a metrics port answers 200 and nothing).
_NOT_TRITON_TYPES: tuple[type[BaseException], ...] = (rapidjson.JSONDecodeError,)
# Triton prefixes a composing model's error with the ensemble's name (server src/ensemble_scheduler): the
# error's `model` already says it.
_ENSEMBLE_PREFIX = "in ensemble '{model}', "


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


def _server_message(error: InferenceServerException, model: str | None) -> str:
    message = " ".join(str(error.message() or "").split()) or "no message"
    return message.removeprefix(_ENSEMBLE_PREFIX.format(model=model)) if model else message


def _detail(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _unavailable(url: ServerURL | None, detail: str, *, answered: bool = False) -> str:
    if url is None:
        return f"server unavailable: {detail}"
    return f"server unavailable at {url}: {detail}; {url.fix_hint(answered=answered)}"


@contextmanager
def translate_transport_errors(
    model: str | None = None, request_id: str | None = None, *, url: ServerURL | None = None
) -> Iterator[None]:
    """Wraps every transport call, sync or async (the body may await). The errors raised carry `model` and
    `request_id`, the facts of the request the transport was sending; `url`, the server it was sent to,
    goes into the message of an error that has no answer from it."""
    try:
        yield
    except BeitClientError:
        raise
    except InferenceServerException as e:
        code = status_code(e.status())
        error = error_for_status(code)
        message = _server_message(e, model)
        if error is ServerUnavailableError:
            message = _unavailable(url, message)
        raise error(message, status_code=code, model=model, request_id=request_id) from e
    except _TIMEOUT_TYPES as e:
        where = f" to {url}" if url is not None else ""
        raise RequestTimeoutError(
            f"request{where} timed out ({_detail(e)})", model=model, request_id=request_id
        ) from e
    except _UNAVAILABLE_TYPES as e:
        raise ServerUnavailableError(_unavailable(url, _detail(e)), model=model, request_id=request_id) from e
    except _NOT_HTTP_TYPES as e:
        # Its text holds the raw bytes that came back; the type says all there is to say.
        message = _unavailable(url, "the answer is not HTTP", answered=True)
        raise ServerUnavailableError(message, model=model, request_id=request_id) from e
    except _NOT_TRITON_TYPES as e:
        server = str(url) if url is not None else "the server"
        hint = f"; {url.fix_hint(answered=True)}" if url is not None else ""
        raise ServerError(
            f"{server} answered HTTP, but not as Triton's API (no JSON body){hint}",
            model=model,
            request_id=request_id,
        ) from e
