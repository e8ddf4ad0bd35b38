"""`BeitClient` and `AsyncBeitClient`: the same methods, names and results; each holds only its I/O and
leaves everything else to `BaseClient`."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import aclosing, closing
from types import TracebackType
from typing import Any, Literal, TypeVar, Unpack, cast, overload

import numpy as np

from beit_repository.names import CLASSIFY_MODEL, EMBED_MODEL

from ._base_client import (
    EMBED_TASK,
    BaseClient,
    Call,
    Embedding,
    PreparedChunk,
    classify_task,
    first_error,
    gather_outcomes,
    image_error,
    model_not_ready,
    parse_model_info,
    plan_chunks,
    probe_image,
    read_results,
    served_labels,
)
from ._config import RequestOptionFields, RequestOptions, TLSConfig
from ._constants import DEFAULT_CONFUSED_PAIRS, DEFAULT_MAX_CONCURRENCY, DEFAULT_THRESHOLD, DEFAULT_TOP_K
from ._evaluation import DatasetInput, EvaluationRun
from ._exceptions import BeitClientError, InvalidRequestError, ServerUnavailableError, TransientError
from ._images import as_image_list
from ._models import EvaluationReport, ModelInfo, Prediction
from ._transports import create_async_transport, create_transport
from ._transports.base import AsyncTransport, ModelConfig, Transport
from ._types import ImageInput, ImagesInput

__all__ = ["AsyncBeitClient", "BeitClient"]

T = TypeVar("T")
ResultT = TypeVar("ResultT")
Outcomes = dict[int, Any]
Progress = Callable[[int, int], None]
"""Called with (images answered, images in the dataset) as an evaluation goes: once before the first
request (the images already in the results file), then after each answered chunk."""


class BeitClient(BaseClient):
    """A client for the served BEiT model. The URL's scheme picks the protocol: `http://`, `https://`,
    `grpc://`, `grpcs://`. Many images are sent in chunks of the model's max batch size, `max_concurrency`
    requests at a time. The keyword arguments of `RequestOptions` (timeout, headers, retries, preprocessing,
    encoding) set this client's options; `with_options` makes a copy with others."""

    def __init__(
        self,
        url: str,
        *,
        tls: TLSConfig | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        transport: Transport | None = None,
        **options: Unpack[RequestOptionFields],
    ) -> None:
        super().__init__(url, tls=tls, max_concurrency=max_concurrency, options=RequestOptions(**options))
        self._transport = transport or create_transport(self.url, timeout=self._settings.timeout, tls=tls)
        self._executor = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="beit-client")

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
        """Closes the connection, for this client and its `with_options` copies; later calls raise
        `ClientClosedError`. Closing again does nothing."""
        if self._state.closed:
            return
        self._state.closed = True
        self._executor.shutdown(wait=True)
        self._transport.close()

    def live(self) -> bool:
        """Whether the server answers at all; False, not an error, when it cannot be reached."""
        self._check_open()
        try:
            return self._transport.server_live(self._settings.headers, self._settings.timeout)
        except TransientError:
            return False

    def ready(self) -> bool:
        """Whether the server and both ensembles (`beit`, `beit_embedding`) accept requests."""
        self._check_open()
        headers, timeout = self._settings.headers, self._settings.timeout
        try:
            return self._transport.server_ready(headers, timeout) and all(
                self._transport.model_ready(model, headers, timeout)
                for model in (CLASSIFY_MODEL, EMBED_MODEL)
            )
        except TransientError:
            return False

    def model_info(self, *, refresh: bool = False) -> ModelInfo:
        """What the server's checkpoint is; fetched once, then cached until `refresh=True`."""
        self._check_open()
        if self._state.model_info is None or refresh:
            self._state.model_info = parse_model_info(self._model_config(CLASSIFY_MODEL, refresh=refresh))
        return self._state.model_info

    @overload
    def classify(
        self, images: ImagesInput, top_k: int = DEFAULT_TOP_K, *, return_exceptions: Literal[False] = False
    ) -> list[list[Prediction]]: ...

    @overload
    def classify(
        self, images: ImagesInput, top_k: int = DEFAULT_TOP_K, *, return_exceptions: Literal[True]
    ) -> list[list[Prediction] | BeitClientError]: ...

    def classify(
        self, images: ImagesInput, top_k: int = DEFAULT_TOP_K, *, return_exceptions: bool = False
    ) -> list[list[Prediction]] | list[list[Prediction] | BeitClientError]:
        """The `top_k` most likely labels of each image, in input order, best first. Every image is
        attempted; then, unless `return_exceptions`, the first failure (in input order) is raised."""
        self._check_open()
        outcomes = self._run(as_image_list(images), Call(classify_task(top_k), self._settings))
        if return_exceptions:
            return outcomes
        _raise_first_error(outcomes)
        return cast(list[list[Prediction]], outcomes)

    def labels(self, *, refresh: bool = False) -> list[str]:
        """The served label of each output index, as Triton's classification extension names them (the
        model's labels file): read once, by asking for every class of one probe image, then cached until
        `refresh=True`."""
        self._check_open()
        if self._state.labels is None or refresh:
            num_labels = self.model_info(refresh=refresh).num_labels
            [predictions] = self.classify(probe_image(), num_labels)
            self._state.labels = served_labels(predictions, num_labels)
        return list(self._state.labels)

    def evaluate(
        self,
        data: DatasetInput,
        *,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
        output: str | os.PathLike[str] | None = None,
        confused_pairs: int = DEFAULT_CONFUSED_PAIRS,
        progress: Progress | None = None,
    ) -> EvaluationReport:
        """Runs a labeled dataset through the served model and measures it: top-1 and top-`top_k` accuracy
        for a multi-class head, mAP and micro/macro F1 at `threshold` for a multi-label one, per class, with
        the most confused class pairs. `data`: a folder of class folders, a .csv or .jsonl of paths and
        labels, or `LabeledImage`s; labels are served label texts or (ImageNet heads) WordNet ids. With
        `output`, each image's result is appended to that JSON lines file as it arrives and a rerun skips the
        images already there. Refused images are the report's `failures`; other errors are raised."""
        self._check_open()
        info, labels = self.model_info(), self.labels()
        run = EvaluationRun.start(
            data,
            info,
            labels,
            top_k=top_k,
            threshold=threshold,
            confused_pairs=confused_pairs,
            output=output,
        )
        with run:
            if progress is not None:
                progress(run.processed, run.total)
            with closing(self._stream(run.sources, Call(run.task, self._settings))) as answers:
                for indices, outcomes in answers:
                    run.record(indices, outcomes)
                    if progress is not None:
                        progress(run.processed, run.total)
        return run.report()

    @overload
    def embed(self, images: ImagesInput, *, return_exceptions: Literal[False] = False) -> Embedding: ...

    @overload
    def embed(
        self, images: ImagesInput, *, return_exceptions: Literal[True]
    ) -> list[Embedding | BeitClientError]: ...

    def embed(
        self, images: ImagesInput, *, return_exceptions: bool = False
    ) -> Embedding | list[Embedding | BeitClientError]:
        """The pooled embedding of each image as a float32 array [n, embedding_size], in input order; with
        `return_exceptions`, a list holding each image's vector or its error."""
        self._check_open()
        outcomes = self._run(as_image_list(images), Call(EMBED_TASK, self._settings))
        if return_exceptions:
            return outcomes
        _raise_first_error(outcomes)
        return _stack_embeddings(cast(list[Embedding], outcomes))

    def _model_config(self, model: str, *, refresh: bool = False) -> ModelConfig:
        configs = self._state.configs
        if refresh or model not in configs:
            headers, timeout = self._settings.headers, self._settings.timeout
            configs[model] = self._with_retries(
                lambda: self._transport.model_config(model, headers, timeout), model
            )
        return configs[model]

    def _with_retries(self, send: Callable[[], T], model: str) -> T:
        retries = 0
        while True:
            try:
                return send()
            except BeitClientError as e:
                delay = self._retry_delay(e, retries, model)
                if delay is not None:
                    time.sleep(delay)
                    retries += 1
                    continue
                if isinstance(e, ServerUnavailableError) and self._model_unready(model):
                    raise model_not_ready(e, model) from e
                raise

    def _model_unready(self, model: str) -> bool:
        """After the last retry: a live server with the model unready tells "not ready" from "down"."""
        headers, timeout = self._settings.headers, self._settings.timeout
        try:
            return self._transport.server_live(headers, timeout) and not self._transport.model_ready(
                model, headers, timeout
            )
        except BeitClientError:
            return False

    def _run(self, images: Sequence[ImageInput], call: Call[ResultT]) -> list[Any]:
        if not images:
            return []
        self._model_config(call.model)
        if call.settings.preprocess == "client":
            self.model_info()
        chunks = plan_chunks(len(images), self._max_batch_size(call.model))
        if len(chunks) == 1:
            parts = [self._run_chunk(images, chunks[0], call)]
        else:
            parts = list(self._executor.map(lambda chunk: self._run_chunk(images, chunk, call), chunks))
        return gather_outcomes(len(images), parts)

    def _stream(
        self, images: Sequence[ImageInput], call: Call[ResultT]
    ) -> Generator[tuple[range, list[Any]], None, None]:
        """Each chunk's indices and outcomes as soon as it is answered, `max_concurrency` chunks in flight.
        Closing the iterator early (an interrupt) cancels the chunks not yet sent and does not wait for
        those in flight."""
        if not images:
            return
        self._model_config(call.model)
        if call.settings.preprocess == "client":
            self.model_info()
        chunks = iter(plan_chunks(len(images), self._max_batch_size(call.model)))
        in_flight: dict[Future[Outcomes], range] = {}

        def send_next() -> None:
            chunk = next(chunks, None)
            if chunk is not None:
                in_flight[self._executor.submit(self._run_chunk, images, chunk, call)] = chunk

        try:
            for _ in range(self.max_concurrency):
                send_next()
            while in_flight:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    chunk = in_flight.pop(future)
                    send_next()
                    outcomes = future.result()
                    yield chunk, [outcomes[index] for index in chunk]
        finally:
            for future in in_flight:
                future.cancel()

    def _run_chunk(self, images: Sequence[ImageInput], chunk: range, call: Call[Any]) -> Outcomes:
        prepared = self._prepare_chunk(images, chunk, call)
        outcomes: Outcomes = dict(prepared.failures)
        for batch in prepared.batches():
            outcomes.update(self._infer_isolating(images, prepared, batch, call))
        return outcomes

    def _infer_isolating(
        self, images: Sequence[ImageInput], prepared: PreparedChunk, indices: list[int], call: Call[Any]
    ) -> Outcomes:
        request = prepared.request(indices, call)
        try:
            outputs = self._with_retries(lambda: self._transport.infer(request), call.model)
            return read_results(call, request, indices, outputs)
        except InvalidRequestError as e:
            if len(indices) == 1:
                return {indices[0]: image_error(e, indices[0], images[indices[0]])}
            # Triton fails a whole batch for one bad image: resend one by one to name it and answer the rest.
            outcomes: Outcomes = {}
            for index in indices:
                outcomes.update(self._infer_isolating(images, prepared, [index], call))
            return outcomes
        except BeitClientError as e:
            return dict.fromkeys(indices, e)


class AsyncBeitClient(BaseClient):
    """The asyncio twin of `BeitClient`: same constructor, methods and results, awaited."""

    def __init__(
        self,
        url: str,
        *,
        tls: TLSConfig | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        transport: AsyncTransport | None = None,
        **options: Unpack[RequestOptionFields],
    ) -> None:
        super().__init__(url, tls=tls, max_concurrency=max_concurrency, options=RequestOptions(**options))
        self._transport = transport or create_async_transport(
            self.url, timeout=self._settings.timeout, tls=tls, concurrency=max_concurrency
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
        """Closes the connection, for this client and its `with_options` copies; later calls raise
        `ClientClosedError`. Closing again does nothing."""
        if self._state.closed:
            return
        self._state.closed = True
        await self._transport.aclose()

    async def live(self) -> bool:
        """Whether the server answers at all; False, not an error, when it cannot be reached."""
        self._check_open()
        try:
            return await self._transport.server_live(self._settings.headers, self._settings.timeout)
        except TransientError:
            return False

    async def ready(self) -> bool:
        """Whether the server and both ensembles (`beit`, `beit_embedding`) accept requests."""
        self._check_open()
        headers, timeout = self._settings.headers, self._settings.timeout
        try:
            if not await self._transport.server_ready(headers, timeout):
                return False
            for model in (CLASSIFY_MODEL, EMBED_MODEL):
                if not await self._transport.model_ready(model, headers, timeout):
                    return False
            return True
        except TransientError:
            return False

    async def model_info(self, *, refresh: bool = False) -> ModelInfo:
        """What the server's checkpoint is; fetched once, then cached until `refresh=True`."""
        self._check_open()
        if self._state.model_info is None or refresh:
            config = await self._model_config(CLASSIFY_MODEL, refresh=refresh)
            self._state.model_info = parse_model_info(config)
        return self._state.model_info

    @overload
    async def classify(
        self, images: ImagesInput, top_k: int = DEFAULT_TOP_K, *, return_exceptions: Literal[False] = False
    ) -> list[list[Prediction]]: ...

    @overload
    async def classify(
        self, images: ImagesInput, top_k: int = DEFAULT_TOP_K, *, return_exceptions: Literal[True]
    ) -> list[list[Prediction] | BeitClientError]: ...

    async def classify(
        self, images: ImagesInput, top_k: int = DEFAULT_TOP_K, *, return_exceptions: bool = False
    ) -> list[list[Prediction]] | list[list[Prediction] | BeitClientError]:
        """The `top_k` most likely labels of each image, in input order, best first. Every image is
        attempted; then, unless `return_exceptions`, the first failure (in input order) is raised."""
        self._check_open()
        outcomes = await self._run(as_image_list(images), Call(classify_task(top_k), self._settings))
        if return_exceptions:
            return outcomes
        _raise_first_error(outcomes)
        return cast(list[list[Prediction]], outcomes)

    async def labels(self, *, refresh: bool = False) -> list[str]:
        """The served label of each output index, as Triton's classification extension names them (the
        model's labels file): read once, by asking for every class of one probe image, then cached until
        `refresh=True`."""
        self._check_open()
        if self._state.labels is None or refresh:
            num_labels = (await self.model_info(refresh=refresh)).num_labels
            [predictions] = await self.classify(probe_image(), num_labels)
            self._state.labels = served_labels(predictions, num_labels)
        return list(self._state.labels)

    async def evaluate(
        self,
        data: DatasetInput,
        *,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
        output: str | os.PathLike[str] | None = None,
        confused_pairs: int = DEFAULT_CONFUSED_PAIRS,
        progress: Progress | None = None,
    ) -> EvaluationReport:
        """Runs a labeled dataset through the served model and measures it: top-1 and top-`top_k` accuracy
        for a multi-class head, mAP and micro/macro F1 at `threshold` for a multi-label one, per class, with
        the most confused class pairs. `data`: a folder of class folders, a .csv or .jsonl of paths and
        labels, or `LabeledImage`s; labels are served label texts or (ImageNet heads) WordNet ids. With
        `output`, each image's result is appended to that JSON lines file as it arrives and a rerun skips the
        images already there. Refused images are the report's `failures`; other errors are raised."""
        self._check_open()
        info, labels = await self.model_info(), await self.labels()
        run = await asyncio.to_thread(
            EvaluationRun.start,
            data,
            info,
            labels,
            top_k=top_k,
            threshold=threshold,
            confused_pairs=confused_pairs,
            output=output,
        )
        with run:
            if progress is not None:
                progress(run.processed, run.total)
            async with aclosing(self._stream(run.sources, Call(run.task, self._settings))) as answers:
                async for indices, outcomes in answers:
                    run.record(indices, outcomes)
                    if progress is not None:
                        progress(run.processed, run.total)
        return await asyncio.to_thread(run.report)

    @overload
    async def embed(self, images: ImagesInput, *, return_exceptions: Literal[False] = False) -> Embedding: ...

    @overload
    async def embed(
        self, images: ImagesInput, *, return_exceptions: Literal[True]
    ) -> list[Embedding | BeitClientError]: ...

    async def embed(
        self, images: ImagesInput, *, return_exceptions: bool = False
    ) -> Embedding | list[Embedding | BeitClientError]:
        """The pooled embedding of each image as a float32 array [n, embedding_size], in input order; with
        `return_exceptions`, a list holding each image's vector or its error."""
        self._check_open()
        outcomes = await self._run(as_image_list(images), Call(EMBED_TASK, self._settings))
        if return_exceptions:
            return outcomes
        _raise_first_error(outcomes)
        return _stack_embeddings(cast(list[Embedding], outcomes))

    async def _model_config(self, model: str, *, refresh: bool = False) -> ModelConfig:
        configs = self._state.configs
        if refresh or model not in configs:
            headers, timeout = self._settings.headers, self._settings.timeout
            configs[model] = await self._with_retries(
                lambda: self._transport.model_config(model, headers, timeout), model
            )
        return configs[model]

    async def _with_retries(self, send: Callable[[], Awaitable[T]], model: str) -> T:
        retries = 0
        while True:
            try:
                return await send()
            except BeitClientError as e:
                delay = self._retry_delay(e, retries, model)
                if delay is not None:
                    await asyncio.sleep(delay)
                    retries += 1
                    continue
                if isinstance(e, ServerUnavailableError) and await self._model_unready(model):
                    raise model_not_ready(e, model) from e
                raise

    async def _model_unready(self, model: str) -> bool:
        """After the last retry: a live server with the model unready tells "not ready" from "down"."""
        headers, timeout = self._settings.headers, self._settings.timeout
        try:
            return await self._transport.server_live(
                headers, timeout
            ) and not await self._transport.model_ready(model, headers, timeout)
        except BeitClientError:
            return False

    async def _run(self, images: Sequence[ImageInput], call: Call[ResultT]) -> list[Any]:
        if not images:
            return []
        await self._model_config(call.model)
        if call.settings.preprocess == "client":
            await self.model_info()
        chunks = plan_chunks(len(images), self._max_batch_size(call.model))
        in_flight = asyncio.Semaphore(self.max_concurrency)

        async def run_chunk(chunk: range) -> Outcomes:
            async with in_flight:
                return await self._run_chunk(images, chunk, call)

        parts = await asyncio.gather(*(run_chunk(chunk) for chunk in chunks))
        return gather_outcomes(len(images), parts)

    async def _stream(
        self, images: Sequence[ImageInput], call: Call[ResultT]
    ) -> AsyncGenerator[tuple[range, list[Any]], None]:
        """Each chunk's indices and outcomes as soon as it is answered, `max_concurrency` chunks in flight.
        Closing the iterator early cancels the chunks still in flight."""
        if not images:
            return
        await self._model_config(call.model)
        if call.settings.preprocess == "client":
            await self.model_info()
        chunks = iter(plan_chunks(len(images), self._max_batch_size(call.model)))
        in_flight: dict[asyncio.Task[Outcomes], range] = {}

        def send_next() -> None:
            chunk = next(chunks, None)
            if chunk is not None:
                in_flight[asyncio.ensure_future(self._run_chunk(images, chunk, call))] = chunk

        try:
            for _ in range(self.max_concurrency):
                send_next()
            while in_flight:
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    chunk = in_flight.pop(task)
                    send_next()
                    outcomes = task.result()
                    yield chunk, [outcomes[index] for index in chunk]
        finally:
            for task in in_flight:
                task.cancel()

    async def _run_chunk(self, images: Sequence[ImageInput], chunk: range, call: Call[Any]) -> Outcomes:
        prepared = await asyncio.to_thread(self._prepare_chunk, images, chunk, call)
        outcomes: Outcomes = dict(prepared.failures)
        for batch in prepared.batches():
            outcomes.update(await self._infer_isolating(images, prepared, batch, call))
        return outcomes

    async def _infer_isolating(
        self, images: Sequence[ImageInput], prepared: PreparedChunk, indices: list[int], call: Call[Any]
    ) -> Outcomes:
        request = prepared.request(indices, call)
        try:
            outputs = await self._with_retries(lambda: self._transport.infer(request), call.model)
            return read_results(call, request, indices, outputs)
        except InvalidRequestError as e:
            if len(indices) == 1:
                return {indices[0]: image_error(e, indices[0], images[indices[0]])}
            # Triton fails a whole batch for one bad image: resend one by one to name it and answer the rest.
            outcomes: Outcomes = {}
            for index in indices:
                outcomes.update(await self._infer_isolating(images, prepared, [index], call))
            return outcomes
        except BeitClientError as e:
            return dict.fromkeys(indices, e)


def _raise_first_error(outcomes: Sequence[object]) -> None:
    error = first_error(outcomes)
    if error is not None:
        raise error


def _stack_embeddings(vectors: list[Embedding]) -> Embedding:
    if not vectors:
        return np.empty((0, 0), dtype=np.float32)
    return np.stack(vectors).astype(np.float32, copy=False)
