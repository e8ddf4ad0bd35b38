"""Triton, as the gateway sees it: the SDK's asyncio client (`AsyncBeitClient`) on one connection, and the
one place where SDK errors become the gateway's (`translate`).

Scores. The `beit` ensemble answers the model's own activation (softmax, or sigmoid for a multi-label head)
through Triton's classification extension: the top k as "score:index:label", the score printed with 6
decimals. Hugging Face's `function_to_apply` may ask for another one, or for the raw logits ("none"); those
need the logits, which only `beit_model` outputs, and that model takes pixels. For them the gateway
preprocesses the image itself (`beit_preprocessing`, the code the server's preprocessor runs, as the SDK's
`preprocess="client"` mode does) and asks `beit_model` for the top k labels and the logits in one request.
The top k are the same under every function (softmax and sigmoid are both monotonic in the logits).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from beit_client import (
    AsyncBeitClient,
    BeitClientError,
    InferRequest,
    InvalidImageError,
    ModelInfo,
    ModelNotFoundError,
    ModelNotReadyError,
    Prediction,
    RequestedOutput,
    RequestTimeoutError,
    ServerUnavailableError,
    ServerURL,
)

# The SDK has no public call for logits: its transport (shared with the client, one connection) and its
# decoder of Triton's classification strings are used directly for that one path.
from beit_client._base_client import decode_predictions
from beit_client._transports import create_async_transport
from beit_preprocessing import DEFAULT_MAX_PIXELS, preprocess_bytes
from beit_preprocessing import InvalidImageError as UnprocessableImage
from beit_repository.names import LOGITS, NETWORK_MODEL, PIXEL_VALUES, PROBABILITIES

from ._constants import READY_CACHE_S, RETRY_AFTER_S
from ._errors import (
    GatewayError,
    ImageError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

__all__ = ["Function", "Outcome", "Upstream", "apply_function", "translate"]

Function = Literal["softmax", "sigmoid", "none"]
Outcome = list[Prediction] | ImageError
"""One image's answer: its predictions, best first, or why it could not be classified."""

_LOGITS_CONCURRENCY = 8
# Cosmetic only, for the message a caller reads: the SDK's and Triton's framing around the preprocessor's
# own reason ("in ensemble 'beit', image 0 of the request: ..." names the resent one-image request).
_FRAMING = re.compile(r"^(the server refused it: )?(in ensemble '[^']*', )?(image \d+ of the request: )?")
_STATUS_SUFFIX = re.compile(r" \(status [A-Z_0-9]+\)$")


def translate(error: BeitClientError, *, retry_after_s: int = RETRY_AFTER_S) -> GatewayError:
    """The gateway's answer to an SDK error that is not one image's fault."""
    if isinstance(error, (ServerUnavailableError, ModelNotReadyError, ModelNotFoundError)):
        return UpstreamUnavailableError(f"Triton cannot classify now: {error}", retry_after_s=retry_after_s)
    if isinstance(error, RequestTimeoutError):
        return UpstreamTimeoutError(f"Triton did not answer in time: {error}")
    return UpstreamError(f"Triton failed: {type(error).__name__}: {error}")


def _image_error(error: InvalidImageError, index: int) -> ImageError:
    reason = _STATUS_SUFFIX.sub("", _FRAMING.sub("", error.reason))
    return ImageError(index, "invalid_image", reason)


def apply_function(
    function: Function, logits: npt.NDArray[np.float32], indices: Sequence[int]
) -> list[float]:
    """`function` of one image's logits, at `indices`; softmax over every class, as transformers does."""
    values = np.asarray(logits, dtype=np.float64)
    chosen = values[list(indices)]
    if function == "none":
        scores = chosen
    elif function == "sigmoid":
        scores = 1.0 / (1.0 + np.exp(-chosen))
    else:
        shifted = np.exp(values - values.max())
        scores = shifted[list(indices)] / shifted.sum()
    return [float(score) for score in scores]


class Upstream:
    """Made inside the running event loop (the gRPC channel belongs to it); `aclose` when done."""

    def __init__(self, url: str, *, timeout_s: float, retry_after_s: int = RETRY_AFTER_S) -> None:
        self.url = ServerURL.parse(url)
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._transport = create_async_transport(self.url, timeout=timeout_s, tls=None, concurrency=64)
        # No retries: a caller gets 503 with Retry-After at once, and decides itself.
        self.client = AsyncBeitClient(url, transport=self._transport, timeout=timeout_s, max_retries=0)
        self._info: ModelInfo | None = None
        self._ready: tuple[float, bool] = (0.0, False)

    async def aclose(self) -> None:
        await self.client.close()

    async def model_info(self) -> ModelInfo:
        """The served checkpoint (labels, activation, preprocessing): read once, then kept."""
        if self._info is None:
            try:
                self._info = await self.client.model_info()
            except BeitClientError as e:
                raise translate(e, retry_after_s=self.retry_after_s) from e
        return self._info

    async def ready(self) -> bool:
        """Triton ready, both ensembles ready and the checkpoint's parameters read; reused for a second."""
        checked_at, ready = self._ready
        if time.monotonic() - checked_at < READY_CACHE_S:
            return ready
        try:
            ready = await self.client.ready()
        except BeitClientError:
            ready = False
        if ready:
            try:
                await self.model_info()
            except GatewayError:
                ready = False
        self._ready = (time.monotonic(), ready)
        return ready

    async def classify(self, images: Sequence[bytes], top_k: int, function: Function | None) -> list[Outcome]:
        """Each image's top `top_k` (at most the number of labels) under `function` (None: the model's
        own), in input order. A failure that is no image's fault raises a `GatewayError`."""
        info = await self.model_info()
        top_k = min(top_k, info.num_labels)
        native: Function = "sigmoid" if info.multi_label else "softmax"
        if function is None or function == native:
            try:
                outcomes = await self.client.classify(list(images), top_k, return_exceptions=True)
            except BeitClientError as e:
                raise translate(e, retry_after_s=self.retry_after_s) from e
        else:
            outcomes = await self._classify_from_logits(images, top_k, function, info)
        results: list[Outcome] = []
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InvalidImageError):
                results.append(_image_error(outcome, index))
            elif isinstance(outcome, BeitClientError):
                raise translate(outcome, retry_after_s=self.retry_after_s) from outcome
            else:
                results.append(outcome)
        return results

    async def _classify_from_logits(
        self, images: Sequence[bytes], top_k: int, function: Function, info: ModelInfo
    ) -> list[list[Prediction] | BeitClientError]:
        in_flight = asyncio.Semaphore(_LOGITS_CONCURRENCY)

        async def one(index: int, image: bytes) -> list[Prediction] | BeitClientError:
            async with in_flight:
                try:
                    pixels = await asyncio.to_thread(
                        preprocess_bytes, image, info.preprocessing, max_pixels=DEFAULT_MAX_PIXELS
                    )
                except UnprocessableImage as e:
                    return InvalidImageError(str(e), index=index, source=f"{len(image)} bytes")
                request = InferRequest(
                    model=NETWORK_MODEL,
                    inputs={PIXEL_VALUES: pixels[np.newaxis]},
                    outputs=(RequestedOutput(PROBABILITIES, top_k), RequestedOutput(LOGITS)),
                    timeout=self.timeout_s,
                )
                try:
                    outputs = await self._transport.infer(request)
                except BeitClientError as e:
                    return e
                (predictions,) = decode_predictions(outputs)
                scores = apply_function(function, outputs[LOGITS][0], [p.index for p in predictions])
                return [
                    Prediction(label=p.label, score=score, index=p.index)
                    for p, score in zip(predictions, scores, strict=True)
                ]

        return list(await asyncio.gather(*(one(i, image) for i, image in enumerate(images))))
