"""Everything the sync and async clients share that does no network I/O: options, request building,
chunking, retry decisions, result decoding, model-config parsing. The clients in `_client.py` add only the
I/O."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Self, TypeVar, Unpack

import numpy as np
import numpy.typing as npt
from PIL import Image

from beit_repository.names import (
    CLASSIFY_MODEL,
    EMBED_MODEL,
    EMBEDDING,
    IMAGE,
    NETWORK_MODEL,
    PIXEL_VALUES,
    PROBABILITIES,
)

from ._config import RequestOptionFields, RequestOptions, RetryPolicy, ServerURL, TLSConfig
from ._constants import (
    DEFAULT_IMAGE_ENCODING,
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_PREPROCESS,
    DEFAULT_TIMEOUT,
)
from ._exceptions import (
    BeitClientError,
    ClientClosedError,
    InvalidImageError,
    InvalidRequestError,
    ModelNotReadyError,
    ServerError,
)
from ._images import ImageOptions, describe_image, encode_image, preprocess_on_client
from ._models import ModelInfo, Prediction
from ._retry import retry_delay, should_retry
from ._transports.base import InferRequest, ModelConfig, RequestedOutput, Tensors
from ._types import ImageInput, PreprocessMode

__all__ = [
    "BaseClient",
    "Call",
    "PreparedChunk",
    "SCORES_TASK",
    "Settings",
    "Task",
    "decode_embeddings",
    "decode_predictions",
    "decode_scores",
]

log = logging.getLogger("beit_client")

ResultT = TypeVar("ResultT")
Embedding = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float32]


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
        raise ValueError(f"a malformed classification {text!r}") from e
    # Without a label file Triton sends "score:index"; the index is the only name there is.
    label = fields[2] if len(fields) == 3 else str(index)
    return Prediction(label=label, score=score, index=index)


def decode_embeddings(outputs: Tensors) -> list[Embedding]:
    matrix = np.asarray(outputs[EMBEDDING], dtype=np.float32)
    return list(matrix.reshape(matrix.shape[0], -1))


def decode_scores(outputs: Tensors) -> list[Scores]:
    """The raw `PROBABILITIES` rows (asked without `class_count`): every class's probability."""
    matrix = np.asarray(outputs[PROBABILITIES])
    if matrix.dtype == np.object_:
        raise ValueError("classification strings where the raw probabilities were asked for")
    matrix = matrix.astype(np.float32, copy=False)
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
SCORES_TASK: Task[Scores] = Task(CLASSIFY_MODEL, PROBABILITIES, 0, decode_scores)
"""Every class's probability, as the raw tensor: what a multi-label evaluation ranks."""


def probe_image() -> Image.Image:
    """An image to ask the classification extension for every class, whose answer names them all."""
    return Image.new("RGB", (32, 32), (128, 128, 128))


def served_labels(predictions: Sequence[Prediction], num_labels: int) -> list[str]:
    """The label of each output index, from an answer for every class."""
    by_index = {prediction.index: prediction.label for prediction in predictions}
    if sorted(by_index) != list(range(num_labels)):
        raise ServerError(f"asked for all {num_labels} classes, the server answered {len(by_index)}")
    return [by_index[index] for index in range(num_labels)]


@dataclass(frozen=True)
class Settings:
    """`RequestOptions` with every default filled in: what requests are sent with."""

    timeout: float
    headers: Mapping[str, str]
    retry: RetryPolicy
    preprocess: PreprocessMode
    images: ImageOptions

    @classmethod
    def resolve(cls, options: RequestOptions) -> Settings:
        retry = options.retry or RetryPolicy()
        if options.max_retries is not None:
            retry = replace(retry, max_retries=options.max_retries)
        return cls(
            timeout=DEFAULT_TIMEOUT if options.timeout is None else options.timeout,
            headers=dict(options.headers or {}),
            retry=retry,
            preprocess=options.preprocess or DEFAULT_PREPROCESS,
            images=ImageOptions(
                options.encoding or DEFAULT_IMAGE_ENCODING,
                DEFAULT_JPEG_QUALITY if options.jpeg_quality is None else options.jpeg_quality,
            ),
        )


@dataclass(frozen=True)
class Call(Generic[ResultT]):
    """One classify/embed call: the question, and the settings of the client it was asked of."""

    task: Task[ResultT]
    settings: Settings

    @property
    def model(self) -> str:
        return self.task.model(self.settings.preprocess)


@dataclass
class PreparedChunk:
    """A chunk's images made ready to send (`payloads`, by input index) or refused before sending
    (`failures`)."""

    payloads: dict[int, bytes | npt.NDArray[np.uint8]]
    failures: dict[int, BeitClientError]

    def batches(self) -> list[list[int]]:
        """Indices to send together. Client-side pixel tensors can only be stacked when their shapes agree
        (a config without a fixed output size); encoded images always can."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, payload in self.payloads.items():
            shape = () if isinstance(payload, bytes) else tuple(payload.shape)
            groups.setdefault(shape, []).append(index)
        return list(groups.values())

    def request(self, indices: Sequence[int], call: Call[Any]) -> InferRequest:
        payloads = [self.payloads[i] for i in indices]
        if call.settings.preprocess == "client":
            inputs: Tensors = {PIXEL_VALUES: np.stack(payloads)}
        else:
            inputs = {IMAGE: np.array(payloads, dtype=np.object_).reshape(len(payloads), 1)}
        return InferRequest(
            model=call.model,
            inputs=inputs,
            outputs=(RequestedOutput(call.task.output, call.task.class_count),),
            headers=call.settings.headers,
            timeout=call.settings.timeout,
        )


def read_results(
    call: Call[ResultT], request: InferRequest, indices: Sequence[int], outputs: Tensors
) -> dict[int, ResultT]:
    """The answer to `request` by input index. An answer that cannot be read is the server's error."""
    try:
        results = call.task.decode(outputs)
        if len(results) != len(indices):
            raise ValueError(f"{len(results)} results for {len(indices)} images")
    except (KeyError, ValueError) as e:
        raise ServerError(
            f"the server's answer could not be read: {e}", model=request.model, request_id=request.request_id
        ) from e
    return dict(zip(indices, results, strict=True))


def image_error(error: InvalidRequestError, index: int, image: ImageInput) -> InvalidImageError:
    """The server refused a request holding only this image: the image is what was invalid, for the reason
    the server gave."""
    if isinstance(error, InvalidImageError):
        return error
    invalid = InvalidImageError(
        str(error),
        index=index,
        source=describe_image(image),
        status_code=error.status_code,
        model=error.model,
        request_id=error.request_id,
    )
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


@dataclass
class ClientState:
    """What a client shares with its `with_options` copies, besides the transport: the model configs read so
    far, the model info parsed from them, the served labels, and whether the client was closed."""

    configs: dict[str, ModelConfig] = field(default_factory=dict)
    model_info: ModelInfo | None = None
    labels: list[str] | None = None
    closed: bool = False


class BaseClient:
    def __init__(
        self, url: str, *, tls: TLSConfig | None, max_concurrency: int, options: RequestOptions
    ) -> None:
        self.url = ServerURL.parse(url)
        self.tls = tls
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self._configure(options)
        self._state = ClientState()

    def _configure(self, options: RequestOptions) -> None:
        self._options = options
        self._settings = Settings.resolve(options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.url)!r})"

    @property
    def options(self) -> RequestOptions:
        """The options this client was given, those of the client it was copied from included; each field
        left None takes its default from `_constants`."""
        return self._options

    @property
    def closed(self) -> bool:
        return self._state.closed

    def with_options(self, **changes: Unpack[RequestOptionFields]) -> Self:
        """A copy of this client with `changes` over its options (headers merged key by key); this client is
        left as it was. The copy shares the connection, the model configs read so far, and closing: closing
        either closes both."""
        configured = copy.copy(self)
        configured._configure(self._options.merge(RequestOptions(**changes)))
        return configured

    def _check_open(self) -> None:
        if self._state.closed:
            raise ClientClosedError(f"{self!r} is closed: make a new client to send more requests")

    def _retry_delay(self, error: BeitClientError, retries_done: int, model: str) -> float | None:
        """Seconds to wait before retrying after `error`, logged; None when it is not to be retried."""
        policy = self._settings.retry
        if not should_retry(error, retries_done, policy):
            return None
        delay = retry_delay(retries_done, policy)
        log.info(
            "Retrying request to %s (model %s) in %f seconds, retry %d of %d, after %s",
            self.url,
            model,
            delay,
            retries_done + 1,
            policy.max_retries,
            _describe(error),
        )
        return delay

    def _max_batch_size(self, model: str) -> int:
        declared = int(self._state.configs[model].get("max_batch_size") or 0)
        return declared if declared > 0 else DEFAULT_MAX_BATCH_SIZE

    def _prepare_chunk(self, images: Sequence[ImageInput], chunk: range, call: Call[Any]) -> PreparedChunk:
        """Reads, encodes or preprocesses one chunk's images (file and URL I/O, CPU work): run in a worker
        thread by both clients."""
        prepared = PreparedChunk({}, {})
        model_info = self._state.model_info
        for index in chunk:
            try:
                if call.settings.preprocess == "client":
                    assert model_info is not None, "model_info is fetched before client-side preprocessing"
                    prepared.payloads[index] = preprocess_on_client(
                        images[index],
                        index,
                        call.settings.images,
                        model_info.preprocessing,
                    )
                else:
                    prepared.payloads[index] = encode_image(images[index], index, call.settings.images)
            except InvalidImageError as e:
                prepared.failures[index] = e
        return prepared


def _describe(error: BeitClientError) -> str:
    request = f" (request id {error.request_id})" if error.request_id else ""
    return f"{type(error).__name__}: {error}{request}"


def model_not_ready(error: BeitClientError, model: str) -> ModelNotReadyError:
    return ModelNotReadyError(
        f"model {model!r} is loaded but not ready: {error}",
        status_code=error.status_code,
        model=model,
        request_id=error.request_id,
    )


def gather_outcomes(
    count: int, parts: Sequence[Mapping[int, ResultT | BeitClientError]]
) -> list[ResultT | BeitClientError]:
    merged: dict[int, ResultT | BeitClientError] = {}
    for part in parts:
        merged.update(part)
    return [merged[index] for index in range(count)]
