"""`BeitClient` and `AsyncBeitClient`: the same methods, names and results; each holds only its I/O and
leaves everything else to `BaseClient`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Literal, TypeVar, cast, overload

import numpy as np

from beit_repository.names import CLASSIFY_MODEL, EMBED_MODEL

from ._base_client import (
    EMBED_TASK,
    BaseClient,
    CallOptions,
    Embedding,
    PreparedChunk,
    classify_task,
    first_error,
    gather_outcomes,
    image_error,
    parse_model_info,
    plan_chunks,
)
from ._config import RetryPolicy, TLSConfig
from ._constants import (
    DEFAULT_IMAGE_ENCODING,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT,
    DEFAULT_TOP_K,
)
from ._exceptions import (
    BeitClientError,
    InvalidRequestError,
    ModelNotReadyError,
    ServerError,
    ServerUnavailableError,
    TransientError,
)
from ._images import as_image_list
from ._models import ModelInfo, Prediction
from ._retry import retry_delay, should_retry
from ._transports import create_async_transport, create_transport
from ._transports.base import AsyncTransport, ModelConfig, Transport
from ._types import Headers, ImageEncoding, ImageInput, ImagesInput, PreprocessMode

__all__ = ["AsyncBeitClient", "BeitClient"]

T = TypeVar("T")
ResultT = TypeVar("ResultT")
Outcomes = dict[int, Any]


class BeitClient(BaseClient):
    """A client for the served BEiT model. The URL's scheme picks the protocol: `http://`, `https://`,
    `grpc://`, `grpcs://`. Many images are sent in chunks of the model's max batch size, `max_concurrency`
    requests at a time; transient failures are retried per `retry`/`max_retries`."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Headers | None = None,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        tls: TLSConfig | None = None,
        preprocess: PreprocessMode = "server",
        encoding: ImageEncoding = DEFAULT_IMAGE_ENCODING,
        jpeg_quality: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            url,
            timeout=timeout,
            headers=headers,
            retry=retry,
            max_retries=max_retries,
            tls=tls,
            preprocess=preprocess,
            encoding=encoding,
            jpeg_quality=jpeg_quality,
            max_concurrency=max_concurrency,
        )
        self._transport = transport or create_transport(self.url, timeout=timeout, tls=tls)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    def __enter__(self) -> BeitClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._transport.close()

    def live(self, *, headers: Headers | None = None, timeout: float | None = None) -> bool:
        """Whether the server answers at all; False, not an error, when it cannot be reached."""
        try:
            return self._transport.server_live(self._headers(headers), timeout)
        except TransientError:
            return False

    def ready(self, *, headers: Headers | None = None, timeout: float | None = None) -> bool:
        """Whether the server and both ensembles (`beit`, `beit_embedding`) accept requests."""
        merged = self._headers(headers)
        try:
            return self._transport.server_ready(merged, timeout) and all(
                self._transport.model_ready(model, merged, timeout) for model in (CLASSIFY_MODEL, EMBED_MODEL)
            )
        except TransientError:
            return False

    def model_info(
        self, *, refresh: bool = False, headers: Headers | None = None, timeout: float | None = None
    ) -> ModelInfo:
        """What the server's checkpoint is; fetched once, then cached until `refresh=True`."""
        if self._model_info is None or refresh:
            config = self._model_config(CLASSIFY_MODEL, self._headers(headers), timeout, refresh=refresh)
            self._model_info = parse_model_info(config)
        return self._model_info

    @overload
    def classify(
        self,
        images: ImagesInput,
        top_k: int = DEFAULT_TOP_K,
        *,
        return_exceptions: Literal[False] = False,
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> list[list[Prediction]]: ...

    @overload
    def classify(
        self,
        images: ImagesInput,
        top_k: int = DEFAULT_TOP_K,
        *,
        return_exceptions: Literal[True],
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> list[list[Prediction] | BeitClientError]: ...

    def classify(
        self,
        images: ImagesInput,
        top_k: int = DEFAULT_TOP_K,
        *,
        return_exceptions: bool = False,
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> list[list[Prediction]] | list[list[Prediction] | BeitClientError]:
        """The `top_k` most likely labels of each image, in input order, best first. Every image is
        attempted; then, unless `return_exceptions`, the first failure (in input order) is raised."""
        options = self._call_options(
            classify_task(top_k),
            preprocess=preprocess,
            encoding=encoding,
            jpeg_quality=jpeg_quality,
            headers=headers,
            timeout=timeout,
        )
        outcomes = self._run(as_image_list(images), options)
        if return_exceptions:
            return outcomes
        _raise_first_error(outcomes)
        return cast(list[list[Prediction]], outcomes)

    @overload
    def embed(
        self,
        images: ImagesInput,
        *,
        return_exceptions: Literal[False] = False,
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> Embedding: ...

    @overload
    def embed(
        self,
        images: ImagesInput,
        *,
        return_exceptions: Literal[True],
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> list[Embedding | BeitClientError]: ...

    def embed(
        self,
        images: ImagesInput,
        *,
        return_exceptions: bool = False,
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> Embedding | list[Embedding | BeitClientError]:
        """The pooled embedding of each image as a float32 array [n, embedding_size], in input order; with
        `return_exceptions`, a list holding each image's vector or its error."""
        options = self._call_options(
            EMBED_TASK,
            preprocess=preprocess,
            encoding=encoding,
            jpeg_quality=jpeg_quality,
            headers=headers,
            timeout=timeout,
        )
        outcomes = self._run(as_image_list(images), options)
        if return_exceptions:
            return outcomes
        _raise_first_error(outcomes)
        return _stack_embeddings(cast(list[Embedding], outcomes))

    def _model_config(
        self, model: str, headers: Mapping[str, str], timeout: float | None, *, refresh: bool = False
    ) -> ModelConfig:
        if refresh or model not in self._configs:
            self._configs[model] = self._with_retries(
                lambda: self._transport.model_config(model, headers, timeout), model, headers
            )
        return self._configs[model]

    def _with_retries(self, send: Callable[[], T], model: str, headers: Mapping[str, str]) -> T:
        retries = 0
        while True:
            try:
                return send()
            except BeitClientError as e:
                if should_retry(e, retries, self.retry):
                    time.sleep(retry_delay(retries, self.retry))
                    retries += 1
                    continue
                if isinstance(e, ServerUnavailableError) and self._model_unready(model, headers):
                    raise ModelNotReadyError(f"model {model!r} is loaded but not ready: {e}") from e
                raise

    def _model_unready(self, model: str, headers: Mapping[str, str]) -> bool:
        """After the last retry: a live server with the model unready tells "not ready" from "down"."""
        try:
            return self._transport.server_live(headers, None) and not self._transport.model_ready(
                model, headers, None
            )
        except BeitClientError:
            return False

    def _run(self, images: Sequence[ImageInput], options: CallOptions[ResultT]) -> list[Any]:
        if not images:
            return []
        self._model_config(options.model, options.headers, options.timeout)
        if options.preprocess == "client":
            self.model_info(headers=options.headers, timeout=options.timeout)
        chunks = plan_chunks(len(images), self._max_batch_size(options.model))
        if len(chunks) == 1:
            parts = [self._run_chunk(images, chunks[0], options)]
        else:
            parts = list(self._pool().map(lambda chunk: self._run_chunk(images, chunk, options), chunks))
        return gather_outcomes(len(images), parts)

    def _pool(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="beit-client")
            return self._executor

    def _run_chunk(self, images: Sequence[ImageInput], chunk: range, options: CallOptions[Any]) -> Outcomes:
        prepared = self._prepare_chunk(images, chunk, options)
        outcomes: Outcomes = dict(prepared.failures)
        for batch in prepared.batches():
            outcomes.update(self._infer_isolating(images, prepared, batch, options))
        return outcomes

    def _infer_isolating(
        self,
        images: Sequence[ImageInput],
        prepared: PreparedChunk,
        indices: list[int],
        options: CallOptions[Any],
    ) -> Outcomes:
        try:
            outputs = self._with_retries(
                lambda: self._transport.infer(prepared.request(indices, options)),
                options.model,
                options.headers,
            )
            return _pair_results(indices, options.task.decode(outputs))
        except InvalidRequestError as e:
            if len(indices) == 1:
                return {indices[0]: image_error(e, indices[0], images[indices[0]])}
            # Triton fails a whole batch for one bad image: resend one by one to name it and answer the rest.
            outcomes: Outcomes = {}
            for index in indices:
                outcomes.update(self._infer_isolating(images, prepared, [index], options))
            return outcomes
        except BeitClientError as e:
            return dict.fromkeys(indices, e)


class AsyncBeitClient(BaseClient):
    """The asyncio twin of `BeitClient`: same constructor, methods and results, awaited."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Headers | None = None,
        retry: RetryPolicy | None = None,
        max_retries: int | None = None,
        tls: TLSConfig | None = None,
        preprocess: PreprocessMode = "server",
        encoding: ImageEncoding = DEFAULT_IMAGE_ENCODING,
        jpeg_quality: int | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        transport: AsyncTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            timeout=timeout,
            headers=headers,
            retry=retry,
            max_retries=max_retries,
            tls=tls,
            preprocess=preprocess,
            encoding=encoding,
            jpeg_quality=jpeg_quality,
            max_concurrency=max_concurrency,
        )
        self._transport = transport or create_async_transport(
            self.url, timeout=timeout, tls=tls, concurrency=max_concurrency
        )

    async def __aenter__(self) -> AsyncBeitClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.aclose()

    async def live(self, *, headers: Headers | None = None, timeout: float | None = None) -> bool:
        """Whether the server answers at all; False, not an error, when it cannot be reached."""
        try:
            return await self._transport.server_live(self._headers(headers), timeout)
        except TransientError:
            return False

    async def ready(self, *, headers: Headers | None = None, timeout: float | None = None) -> bool:
        """Whether the server and both ensembles (`beit`, `beit_embedding`) accept requests."""
        merged = self._headers(headers)
        try:
            if not await self._transport.server_ready(merged, timeout):
                return False
            for model in (CLASSIFY_MODEL, EMBED_MODEL):
                if not await self._transport.model_ready(model, merged, timeout):
                    return False
            return True
        except TransientError:
            return False

    async def model_info(
        self, *, refresh: bool = False, headers: Headers | None = None, timeout: float | None = None
    ) -> ModelInfo:
        """What the server's checkpoint is; fetched once, then cached until `refresh=True`."""
        if self._model_info is None or refresh:
            config = await self._model_config(
                CLASSIFY_MODEL, self._headers(headers), timeout, refresh=refresh
            )
            self._model_info = parse_model_info(config)
        return self._model_info

    @overload
    async def classify(
        self,
        images: ImagesInput,
        top_k: int = DEFAULT_TOP_K,
        *,
        return_exceptions: Literal[False] = False,
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> list[list[Prediction]]: ...

    @overload
    async def classify(
        self,
        images: ImagesInput,
        top_k: int = DEFAULT_TOP_K,
        *,
        return_exceptions: Literal[True],
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> list[list[Prediction] | BeitClientError]: ...

    async def classify(
        self,
        images: ImagesInput,
        top_k: int = DEFAULT_TOP_K,
        *,
        return_exceptions: bool = False,
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> list[list[Prediction]] | list[list[Prediction] | BeitClientError]:
        """The `top_k` most likely labels of each image, in input order, best first. Every image is
        attempted; then, unless `return_exceptions`, the first failure (in input order) is raised."""
        options = self._call_options(
            classify_task(top_k),
            preprocess=preprocess,
            encoding=encoding,
            jpeg_quality=jpeg_quality,
            headers=headers,
            timeout=timeout,
        )
        outcomes = await self._run(as_image_list(images), options)
        if return_exceptions:
            return outcomes
        _raise_first_error(outcomes)
        return cast(list[list[Prediction]], outcomes)

    @overload
    async def embed(
        self,
        images: ImagesInput,
        *,
        return_exceptions: Literal[False] = False,
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> Embedding: ...

    @overload
    async def embed(
        self,
        images: ImagesInput,
        *,
        return_exceptions: Literal[True],
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> list[Embedding | BeitClientError]: ...

    async def embed(
        self,
        images: ImagesInput,
        *,
        return_exceptions: bool = False,
        preprocess: PreprocessMode | None = None,
        encoding: ImageEncoding | None = None,
        jpeg_quality: int | None = None,
        headers: Headers | None = None,
        timeout: float | None = None,
    ) -> Embedding | list[Embedding | BeitClientError]:
        """The pooled embedding of each image as a float32 array [n, embedding_size], in input order; with
        `return_exceptions`, a list holding each image's vector or its error."""
        options = self._call_options(
            EMBED_TASK,
            preprocess=preprocess,
            encoding=encoding,
            jpeg_quality=jpeg_quality,
            headers=headers,
            timeout=timeout,
        )
        outcomes = await self._run(as_image_list(images), options)
        if return_exceptions:
            return outcomes
        _raise_first_error(outcomes)
        return _stack_embeddings(cast(list[Embedding], outcomes))

    async def _model_config(
        self, model: str, headers: Mapping[str, str], timeout: float | None, *, refresh: bool = False
    ) -> ModelConfig:
        if refresh or model not in self._configs:
            self._configs[model] = await self._with_retries(
                lambda: self._transport.model_config(model, headers, timeout), model, headers
            )
        return self._configs[model]

    async def _with_retries(
        self, send: Callable[[], Awaitable[T]], model: str, headers: Mapping[str, str]
    ) -> T:
        retries = 0
        while True:
            try:
                return await send()
            except BeitClientError as e:
                if should_retry(e, retries, self.retry):
                    await asyncio.sleep(retry_delay(retries, self.retry))
                    retries += 1
                    continue
                if isinstance(e, ServerUnavailableError) and await self._model_unready(model, headers):
                    raise ModelNotReadyError(f"model {model!r} is loaded but not ready: {e}") from e
                raise

    async def _model_unready(self, model: str, headers: Mapping[str, str]) -> bool:
        """After the last retry: a live server with the model unready tells "not ready" from "down"."""
        try:
            return await self._transport.server_live(headers, None) and not await self._transport.model_ready(
                model, headers, None
            )
        except BeitClientError:
            return False

    async def _run(self, images: Sequence[ImageInput], options: CallOptions[ResultT]) -> list[Any]:
        if not images:
            return []
        await self._model_config(options.model, options.headers, options.timeout)
        if options.preprocess == "client":
            await self.model_info(headers=options.headers, timeout=options.timeout)
        chunks = plan_chunks(len(images), self._max_batch_size(options.model))
        in_flight = asyncio.Semaphore(self.max_concurrency)

        async def run_chunk(chunk: range) -> Outcomes:
            async with in_flight:
                return await self._run_chunk(images, chunk, options)

        parts = await asyncio.gather(*(run_chunk(chunk) for chunk in chunks))
        return gather_outcomes(len(images), parts)

    async def _run_chunk(
        self, images: Sequence[ImageInput], chunk: range, options: CallOptions[Any]
    ) -> Outcomes:
        prepared = await asyncio.to_thread(self._prepare_chunk, images, chunk, options)
        outcomes: Outcomes = dict(prepared.failures)
        for batch in prepared.batches():
            outcomes.update(await self._infer_isolating(images, prepared, batch, options))
        return outcomes

    async def _infer_isolating(
        self,
        images: Sequence[ImageInput],
        prepared: PreparedChunk,
        indices: list[int],
        options: CallOptions[Any],
    ) -> Outcomes:
        try:
            outputs = await self._with_retries(
                lambda: self._transport.infer(prepared.request(indices, options)),
                options.model,
                options.headers,
            )
            return _pair_results(indices, options.task.decode(outputs))
        except InvalidRequestError as e:
            if len(indices) == 1:
                return {indices[0]: image_error(e, indices[0], images[indices[0]])}
            # Triton fails a whole batch for one bad image: resend one by one to name it and answer the rest.
            outcomes: Outcomes = {}
            for index in indices:
                outcomes.update(await self._infer_isolating(images, prepared, [index], options))
            return outcomes
        except BeitClientError as e:
            return dict.fromkeys(indices, e)


def _pair_results(indices: list[int], results: list[Any]) -> Outcomes:
    if len(results) != len(indices):
        raise ServerError(f"the server answered {len(results)} results for {len(indices)} images")
    return dict(zip(indices, results, strict=True))


def _raise_first_error(outcomes: Sequence[object]) -> None:
    error = first_error(outcomes)
    if error is not None:
        raise error


def _stack_embeddings(vectors: list[Embedding]) -> Embedding:
    if not vectors:
        return np.empty((0, 0), dtype=np.float32)
    return np.stack(vectors).astype(np.float32, copy=False)
