"""Everything the sync and async clients share that does no network I/O: settings, request building,
chunking, result decoding, model-config parsing. The clients in `_client.py` add only the I/O."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from beit_repository.names import (
    CLASSIFY_MODEL,
    EMBED_MODEL,
    EMBEDDING,
    IMAGE,
    NETWORK_MODEL,
    PIXEL_VALUES,
    PROBABILITIES,
)

from ._config import RetryPolicy, ServerURL, TLSConfig
from ._constants import (
    DEFAULT_IMAGE_ENCODING,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT,
    MAX_DECODED_PIXELS,
)
from ._exceptions import BeitClientError, InvalidImageError, InvalidRequestError, ServerError
from ._images import ImageOptions, describe_image, encode_image, preprocess_on_client
from ._models import ModelInfo, Prediction
from ._transports.base import InferRequest, ModelConfig, RequestedOutput, Tensors
from ._types import Headers, ImageEncoding, ImageInput, PreprocessMode

__all__ = ["BaseClient", "CallOptions", "PreparedChunk", "Task", "decode_embeddings", "decode_predictions"]

ResultT = TypeVar("ResultT")
Embedding = npt.NDArray[np.float32]


def decode_predictions(outputs: Tensors) -> list[list[Prediction]]:
    """Rows of Triton classification strings "score:index:label" into predictions. Labels may hold ':' and
    ',' themselves ("tabby, tabby cat"), so only the first two colons separate fields."""
    rows = np.asarray(outputs[PROBABILITIES], dtype=object)
    rows = rows.reshape(rows.shape[0], -1) if rows.ndim else rows.reshape(1, 1)
    return [[_parse_classification(entry) for entry in row] for row in rows]


def _parse_classification(entry: bytes | str) -> Prediction:
    text = entry.decode("utf-8") if isinstance(entry, bytes) else str(entry)
    fields = text.split(":", 2)
    try:
        score, index = float(fields[0]), int(fields[1])
    except (ValueError, IndexError) as e:
        raise ServerError(f"the server returned a malformed classification {text!r}") from e
    # Without a label file Triton sends "score:index"; the index is the only name there is.
    label = fields[2] if len(fields) == 3 else str(index)
    return Prediction(label=label, score=score, index=index)


def decode_embeddings(outputs: Tensors) -> list[Embedding]:
    matrix = np.asarray(outputs[EMBEDDING], dtype=np.float32)
    return list(matrix.reshape(matrix.shape[0], -1))


@dataclass(frozen=True)
class Task(Generic[ResultT]):
    """One kind of question to the model: which ensemble answers it, which output, how to read the rows."""

    ensemble: str
    output: str
    class_count: int
    decode: Callable[[Tensors], list[ResultT]]

    def model(self, preprocess: PreprocessMode) -> str:
        return NETWORK_MODEL if preprocess == "client" else self.ensemble


def classify_task(top_k: int) -> Task[list[Prediction]]:
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    return Task(CLASSIFY_MODEL, PROBABILITIES, top_k, decode_predictions)


EMBED_TASK: Task[Embedding] = Task(EMBED_MODEL, EMBEDDING, 0, decode_embeddings)


@dataclass(frozen=True)
class CallOptions(Generic[ResultT]):
    """The settings of one classify/embed call, the client's defaults filled in."""

    task: Task[ResultT]
    preprocess: PreprocessMode
    images: ImageOptions
    headers: Mapping[str, str]
    timeout: float | None

    @property
    def model(self) -> str:
        return self.task.model(self.preprocess)


@dataclass
class PreparedChunk:
    """A chunk's images made ready to send (`payloads`, by input index) or refused before sending
    (`failures`)."""

    payloads: dict[int, bytes | npt.NDArray[np.float32]]
    failures: dict[int, BeitClientError]

    def batches(self) -> list[list[int]]:
        """Indices to send together. Client-side pixel tensors can only be stacked when their shapes agree
        (a config without a fixed output size); encoded images always can."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, payload in self.payloads.items():
            shape = () if isinstance(payload, bytes) else tuple(payload.shape)
            groups.setdefault(shape, []).append(index)
        return list(groups.values())

    def request(self, indices: Sequence[int], options: CallOptions[Any]) -> InferRequest:
        payloads = [self.payloads[i] for i in indices]
        if options.preprocess == "client":
            inputs: Tensors = {PIXEL_VALUES: np.stack(payloads).astype(np.float32, copy=False)}
        else:
            inputs = {IMAGE: np.array(payloads, dtype=np.object_).reshape(len(payloads), 1)}
        return InferRequest(
            model=options.model,
            inputs=inputs,
            outputs=(RequestedOutput(options.task.output, options.task.class_count),),
            headers=options.headers,
            timeout=options.timeout,
        )


def image_error(error: InvalidRequestError, index: int, image: ImageInput) -> InvalidImageError:
    """The server refused a request holding only this image: the image is what was invalid."""
    if isinstance(error, InvalidImageError):
        return error
    invalid = InvalidImageError(f"the server refused it: {error}", index=index, source=describe_image(image))
    invalid.__cause__ = error
    return invalid


def plan_chunks(count: int, max_batch_size: int) -> list[range]:
    return [range(start, min(start + max_batch_size, count)) for start in range(0, count, max_batch_size)]


def first_error(outcomes: Sequence[object]) -> BeitClientError | None:
    return next((outcome for outcome in outcomes if isinstance(outcome, BeitClientError)), None)


def string_parameters(config: ModelConfig) -> dict[str, str]:
    parameters: Mapping[str, Mapping[str, str]] = config.get("parameters") or {}
    return {key: value.get("string_value", "") for key, value in parameters.items()}


def parse_model_info(config: ModelConfig) -> ModelInfo:
    """The checkpoint parameters beit-build writes into the `beit` config, each value JSON text."""
    from beit_preprocessing import PreprocessingConfig

    parameters = string_parameters(config)
    try:
        return ModelInfo(
            checkpoint=str(json.loads(parameters["checkpoint"])),
            num_labels=int(json.loads(parameters["num_labels"])),
            embedding_size=int(json.loads(parameters["embedding_size"])),
            max_batch_size=int(config.get("max_batch_size") or 0),
            random_weights=bool(json.loads(parameters["random_weights"])),
            multi_label=bool(json.loads(parameters["multi_label"])),
            preprocessing=PreprocessingConfig.from_parameters(parameters),
        )
    except (KeyError, ValueError, TypeError) as e:
        raise ServerError(
            f"the {config.get('name', CLASSIFY_MODEL)!r} model config lacks the checkpoint parameters "
            f"beit-build writes ({e!r}); rebuild the repository with beit-build"
        ) from e


class BaseClient:
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
    ) -> None:
        self.url = ServerURL.parse(url)
        self.timeout = timeout
        self.headers: dict[str, str] = dict(headers or {})
        retry = retry or RetryPolicy()
        if max_retries is not None:
            retry = RetryPolicy(max_retries, retry.initial_delay, retry.max_delay)
        self.retry = retry
        self.tls = tls
        self.preprocess = _check_preprocess(preprocess)
        self.image_options = (
            ImageOptions(encoding) if jpeg_quality is None else ImageOptions(encoding, jpeg_quality)
        )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self._configs: dict[str, ModelConfig] = {}
        self._model_info: ModelInfo | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.url)!r})"

    def _call_options(
        self,
        task: Task[ResultT],
        *,
        preprocess: PreprocessMode | None,
        encoding: ImageEncoding | None,
        jpeg_quality: int | None,
        headers: Headers | None,
        timeout: float | None,
    ) -> CallOptions[ResultT]:
        defaults = self.image_options
        images = ImageOptions(
            encoding or defaults.encoding,
            defaults.jpeg_quality if jpeg_quality is None else jpeg_quality,
            defaults.url_timeout,
            defaults.max_url_bytes,
        )
        return CallOptions(
            task=task,
            preprocess=_check_preprocess(preprocess or self.preprocess),
            images=images,
            headers=self._headers(headers),
            timeout=timeout,
        )

    def _headers(self, headers: Headers | None) -> dict[str, str]:
        return {**self.headers, **(headers or {})}

    def _max_batch_size(self, model: str) -> int:
        declared = int(self._configs[model].get("max_batch_size") or 0)
        return declared if declared > 0 else DEFAULT_MAX_BATCH_SIZE

    def _prepare_chunk(
        self, images: Sequence[ImageInput], chunk: range, options: CallOptions[Any]
    ) -> PreparedChunk:
        """Reads, encodes or preprocesses one chunk's images (file and URL I/O, CPU work): run in a worker
        thread by both clients."""
        prepared = PreparedChunk({}, {})
        preprocessing = self._model_info.preprocessing if self._model_info is not None else None
        for index in chunk:
            try:
                if options.preprocess == "client":
                    assert preprocessing is not None, "model_info is fetched before client-side preprocessing"
                    prepared.payloads[index] = preprocess_on_client(
                        images[index], index, options.images, preprocessing, MAX_DECODED_PIXELS
                    )
                else:
                    prepared.payloads[index] = encode_image(images[index], index, options.images)
            except InvalidImageError as e:
                prepared.failures[index] = e
        return prepared


def _check_preprocess(mode: str) -> PreprocessMode:
    if mode == "server":
        return "server"
    if mode == "client":
        return "client"
    raise ValueError(f"preprocess must be 'server' or 'client', not {mode!r}")


def gather_outcomes(
    count: int, parts: Sequence[Mapping[int, ResultT | BeitClientError]]
) -> list[ResultT | BeitClientError]:
    merged: dict[int, ResultT | BeitClientError] = {}
    for part in parts:
        merged.update(part)
    return [merged[index] for index in range(count)]
