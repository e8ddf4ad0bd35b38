"""The two request contracts, read into one `ClassifyRequest`, and their answers.

Azure ML online endpoint (the `microsoft-beit-base-patch16-224-pt22k-ft22k` model card in Azure's model
catalog, azureml-assets `assets/models/system/<model>/description.md`; its MLflow signature answers `label`
and `score`), at POST /score:

    {"input_data": ["<base64 or URL>", ...], "parameters": {"top_k": 3}}
    {"input_data": {"columns": ["image"], "index": [0, 1], "data": ["<base64 or URL>", ...]}}
    -> [[{"label": "tabby, tabby cat", "score": 0.91}, ...], ...]    one list per image, in input order

`parameters` may also be spelled `params`, as MLflow's scoring server names it. Split-form rows may be the
image itself or a row of values, one per column.

Hugging Face Inference API (image-classification), at POST /models/{model}:

    the image file as the body (Content-Type: image/*, application/octet-stream, or none at all, which is
    what huggingface_hub's InferenceClient sends for bytes), or
    {"inputs": "<base64>", "parameters": {"top_k": 3, "function_to_apply": "softmax"}}
    -> [{"label": "tabby, tabby cat", "score": 0.91}, ...]

The request's JSON structure is checked here (400 naming the field); each image's own value is checked by
`_images.parse_image_string`, so one bad image fails with its index without hiding the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    StrictInt,
    Tag,
    ValidationError,
)

from beit_client import Prediction

from ._errors import BadRequestError, ImageError

__all__ = [
    "AzureRequest",
    "ClassifyRequest",
    "HuggingFaceRequest",
    "Parameters",
    "ScoredLabel",
    "parse_azure",
    "parse_hugging_face",
    "scored_labels",
]

FunctionName = Literal["softmax", "sigmoid", "none"]
_IMAGE_COLUMN = "image"


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: Annotated[StrictInt, Field(ge=1)] | None = Field(
        default=None, description="Classes answered per image (default: the deployment's, 5 unless set)."
    )
    function_to_apply: FunctionName | None = Field(
        default=None,
        description="How scores are computed from the logits: the model's own activation when left out "
        "(softmax; sigmoid for multi-label heads), or softmax, sigmoid, or none (the raw logits).",
    )


class AzureSplitInput(BaseModel):
    """pandas' "split" orientation, as Azure ML samples send it."""

    model_config = ConfigDict(extra="forbid")

    columns: list[str] = Field(description='Must include "image".')
    index: list[JsonValue] | None = Field(default=None, description="Row labels; as many as rows of data.")
    data: list[JsonValue] = Field(
        description="One row per image: the image itself (base64, a data: URL or an http(s) URL), or a "
        "list of values, one per column."
    )


def _input_form(value: Any) -> str:
    return "list" if isinstance(value, list) else "split"


class AzureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_data: Annotated[
        Annotated[list[JsonValue], Tag("list")] | Annotated[AzureSplitInput, Tag("split")],
        Discriminator(_input_form),
    ] = Field(description="The images: a list of base64 strings or URLs, or the split form.")
    parameters: Parameters | None = Field(default=None, validation_alias=AliasChoices("parameters", "params"))


class HuggingFaceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: JsonValue = Field(description="One image: base64 (a data: URL or an http(s) URL also work).")
    parameters: Parameters | None = None


class ScoredLabel(BaseModel):
    label: str
    score: float


@dataclass(frozen=True)
class ClassifyRequest:
    """What either contract asks: the images as the JSON gave them (each checked later), and the parameters,
    None where the request left them to the deployment. An image already refused by its place in the request
    (a split-form row of the wrong length) is its `ImageError`."""

    images: Sequence[object]
    top_k: int | None = None
    function: FunctionName | None = None


def _validation_message(error: ValidationError) -> str:
    problems = []
    for detail in error.errors(include_url=False):
        location = ".".join(str(part) for part in detail["loc"] if part not in ("list", "split"))
        problems.append(f"{location}: {detail['msg']}" if location else str(detail["msg"]))
    return "invalid request: " + "; ".join(problems)


def _parameters(parameters: Parameters | None) -> dict[str, Any]:
    if parameters is None:
        return {}
    return {"top_k": parameters.top_k, "function": parameters.function_to_apply}


def parse_azure(body: bytes) -> ClassifyRequest:
    try:
        request = AzureRequest.model_validate_json(body)
    except ValidationError as e:
        raise BadRequestError(_validation_message(e)) from e
    if isinstance(request.input_data, list):
        return ClassifyRequest(request.input_data, **_parameters(request.parameters))
    split = request.input_data
    if _IMAGE_COLUMN not in split.columns:
        raise BadRequestError(f"invalid request: input_data.columns must include {_IMAGE_COLUMN!r}")
    if split.index is not None and len(split.index) != len(split.data):
        raise BadRequestError(
            f"invalid request: input_data.index has {len(split.index)} entries for {len(split.data)} rows"
        )
    column = split.columns.index(_IMAGE_COLUMN)
    images: list[object] = []
    for index, row in enumerate(split.data):
        if not isinstance(row, list):
            images.append(row)
        elif len(row) == len(split.columns):
            images.append(row[column])
        else:
            reason = f"the row has {len(row)} values for {len(split.columns)} columns"
            images.append(ImageError(index, "invalid_row", reason))
    return ClassifyRequest(images, **_parameters(request.parameters))


def parse_hugging_face(body: bytes) -> ClassifyRequest:
    try:
        request = HuggingFaceRequest.model_validate_json(body)
    except ValidationError as e:
        raise BadRequestError(_validation_message(e)) from e
    return ClassifyRequest([request.inputs], **_parameters(request.parameters))


def scored_labels(predictions: Sequence[Prediction]) -> list[dict[str, Any]]:
    return [{"label": prediction.label, "score": prediction.score} for prediction in predictions]
