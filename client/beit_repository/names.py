"""Every name the model repository is wired by: models, tensors, files and config variants.

Triton matches each of these by exact string across the model configs, the exported ONNX graph, the
Python-backend models and every client, so each is defined here once. Stdlib only: the Python-backend
models import this module inside the Triton container.
"""

from __future__ import annotations

CLASSIFY_MODEL = "beit"
"""Ensemble: an encoded image in, labeled class probabilities out."""
EMBED_MODEL = "beit_embedding"
"""Ensemble: an encoded image in, the pooled image embedding out."""
PREPROCESS_MODEL = "beit_preprocess"
"""Python backend: encoded image bytes in, uint8 pixels (resized and cropped) out."""
NETWORK_MODEL = "beit_model"
"""The exported network: uint8 pixels in (it rescales and normalizes them), logits, probabilities and
embedding out."""
MODELS = (CLASSIFY_MODEL, EMBED_MODEL, PREPROCESS_MODEL, NETWORK_MODEL)
ENSEMBLES = (CLASSIFY_MODEL, EMBED_MODEL)

IMAGE = "IMAGE"
PIXEL_VALUES = "PIXEL_VALUES"
LOGITS = "LOGITS"
PROBABILITIES = "PROBABILITIES"
EMBEDDING = "EMBEDDING"
NETWORK_OUTPUTS = (LOGITS, PROBABILITIES, EMBEDDING)

CONFIG_FILE = "config.pbtxt"
VARIANTS_DIRECTORY = "configs"
"""configs/NAME.pbtxt replaces config.pbtxt when Triton runs with --model-config-name=NAME."""
EMBEDDED_VARIANT = "embedded"
"""The CPU variants the embedded server loads."""
INT8_VARIANT = "embedded_int8"
"""The embedded variants with beit_model running INT8_ONNX_FILE (beit-build --quantize int8)."""
TENSORRT_VARIANT = "tensorrt"
"""beit_model as a TensorRT plan."""
CPU_VARIANT = "cpu"
"""beit_model in the Triton container's onnxruntime backend on CPU instances (clusters without GPUs)."""
DEFAULT_VARIANT = "config"
"""No model has configs/config.pbtxt, so this name loads config.pbtxt (Triton refuses an empty name)."""

MODEL_VERSION = "1"
ONNX_FILE = "model.onnx"
ONNX_DATA_SUFFIX = ".data"
ONNX_DATA_GLOB = f"{ONNX_FILE}*{ONNX_DATA_SUFFIX}"
"""Every external data file a build may leave beside model.onnx (onnx_data_file's, the exporters' usual
model.onnx.data)."""
ONNX_DATA_FILES_PARAMETER = "onnx_data_files"
"""Config parameter: JSON list of the external data files model.onnx refers to (empty for a single file), so
that readers without the onnx package (beit-serve's preflight, the Python-backend model) can check them."""
INT8_ONNX_FILE = "model.int8.onnx"
"""model.onnx with its MatMul weights quantized to int8 (beit-build --quantize int8); model.onnx stays."""
ONNX_FILE_PARAMETER = "onnx_file"
"""The embedded beit_model's parameter naming the file in its version directory to run (default ONNX_FILE)."""
PLAN_FILE = "model.plan"
LABELS_FILE = "labels.txt"

DEFAULT_REPOSITORY = "output/model_repository"
"""Where beit-build writes, and beit-serve, make and docker-compose read, the built repository: the template's
configs completed for one checkpoint, plus its artifacts. Ignored by git; the template is never written."""


def onnx_data_file(content_digest: str) -> str:
    """The external data file beside model.onnx holding its tensors: named after its content, so that a new
    build's data never overwrites the file the current model.onnx refers to (beit_build.onnx_files)."""
    return f"{ONNX_FILE}.{content_digest}{ONNX_DATA_SUFFIX}"
