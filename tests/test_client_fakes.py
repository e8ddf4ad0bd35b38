"""A fake `beit` deployment for the client's unit tests: model configs as beit-build writes them and an
infer handler answering like the ensembles, over `MockTransport`. No tests here."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image
from tritonclient.utils import InferenceServerException

from beit_client import InferRequest
from beit_preprocessing import PreprocessingConfig

# Labels as the 22k checkpoints have them: commas inside, and colons to trip naive parsers.
LABELS = ["tabby, tabby cat", "ratio 16:9 screen", "a:b:c, d", "plain"]
EMBEDDING_SIZE = 8
MAX_BATCH_SIZE = 4


def model_configs(
    max_batch_size: int = MAX_BATCH_SIZE, random_weights: bool = True
) -> dict[str, dict[str, Any]]:
    parameters = {
        "checkpoint": json.dumps("tiny/random-beit"),
        "random_weights": json.dumps(random_weights),
        "num_labels": json.dumps(len(LABELS)),
        "embedding_size": json.dumps(EMBEDDING_SIZE),
        "multi_label": json.dumps(False),
        **PreprocessingConfig().to_parameters(),
    }
    block = {key: {"string_value": value} for key, value in parameters.items()}
    return {
        name: {"name": name, "max_batch_size": max_batch_size, "parameters": block}
        for name in ("beit", "beit_embedding", "beit_model")
    }


def image_bytes(width: int, height: int = 6, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (width % 256, 10, 20)).save(buffer, format=fmt)
    return buffer.getvalue()


def label_index(width: int) -> int:
    """The fake model's answer for an image: its width picks the top label, so order is checkable."""
    return width % len(LABELS)


def _widths(request: InferRequest) -> list[int]:
    if "PIXEL_VALUES" in request.inputs:
        return [int(pixels.shape[-1]) for pixels in request.inputs["PIXEL_VALUES"]]
    widths = []
    for (data,) in request.inputs["IMAGE"]:
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                widths.append(image.width)
        except Exception as e:
            # The real preprocessor fails the whole request for one bad image, as INVALID_ARG.
            raise InferenceServerException(f"invalid image: {e}", status="400") from e
    return widths


def beit_handler(request: InferRequest) -> dict[str, np.ndarray]:
    widths = _widths(request)
    output = request.outputs[0]
    if output.name == "EMBEDDING":
        return {"EMBEDDING": np.array([[w] * EMBEDDING_SIZE for w in widths], dtype=np.float32)}
    rows = []
    for width in widths:
        top = label_index(width)
        order = [top] + [i for i in range(len(LABELS)) if i != top]
        scores = [0.7, 0.2, 0.07, 0.03]
        rows.append(
            [f"{scores[rank]}:{i}:{LABELS[i]}".encode() for rank, i in enumerate(order[: output.class_count])]
        )
    return {"PROBABILITIES": np.array(rows, dtype=np.object_)}
