"""The template's model configs completed for one checkpoint.

The template (model_repository/) holds what is true of every checkpoint; a build adds what depends on the
checkpoint: its parameters (JSON text, which the preprocessor and clients read), the exact tensor dims of the
exported graph, and the image size inside TensorRT profile shapes and warmup inputs. The onnxruntime backend
refuses a config dim of -1 where the model's own dim is fixed (onnxruntime_backend `CompareDimsSupported`), so
the dims are written, never left as wildcards.

The TensorRT accelerator's engine cache is keyed per model: ONNX Runtime names a cached engine after the
graph's structure, precision and GPU architecture, never after its weights, so two checkpoints of one
architecture would share an engine and the second would serve the first one's answers. A build writes the
cache path as the template's root plus a subdirectory named by the hash of model.onnx (`engine_cache_key`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from beit_repository.model_config import ModelConfig, batch_profile, set_parameters

TENSORRT_ACCELERATOR = "tensorrt"
ENGINE_CACHE_PATH_KEY = "trt_engine_cache_path"
ENGINE_CACHE_KEY_LENGTH = 16
"""Hex digits of the model's SHA-256 in its engine cache directory's name (64 bits: collisions are not a
concern for the handful of models one cache volume sees)."""
PROFILE_SHAPE_KEYS = {
    "min": "trt_profile_min_shapes",
    "opt": "trt_profile_opt_shapes",
    "max": "trt_profile_max_shapes",
}


def engine_cache_key(model_files: Iterable[Path]) -> str:
    """The hash of the model's files (model.onnx, and its external data where there is any), in file order."""
    digest = hashlib.sha256()
    for path in model_files:
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:ENGINE_CACHE_KEY_LENGTH]


def complete(
    template: ModelConfig,
    parameters: Mapping[str, str],
    dims: Mapping[str, list[int]],
    *,
    engine_cache_key: str,
) -> ModelConfig:
    """A copy of `template` with `parameters` set, every tensor named in `dims` (graph tensor -> dims after
    the batch axis) given those dims (inputs, outputs, warmup inputs and TensorRT profile shapes), and the
    TensorRT engine cache moved into the subdirectory `engine_cache_key` of the template's cache path."""
    config = ModelConfig()
    config.CopyFrom(template)
    set_parameters(config, parameters)
    for tensor in [*config.input, *config.output]:
        if tensor.name in dims:
            tensor.dims[:] = dims[tensor.name]
    for warmup in config.model_warmup:
        for name, warmup_input in warmup.inputs.items():
            if name in dims:
                warmup_input.dims[:] = dims[name]
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    for accelerator in accelerators:
        if accelerator.name == TENSORRT_ACCELERATOR:
            accelerator.parameters.update(profile_shapes(config, dims))
            if ENGINE_CACHE_PATH_KEY in accelerator.parameters:
                root = PurePosixPath(accelerator.parameters[ENGINE_CACHE_PATH_KEY])
                accelerator.parameters[ENGINE_CACHE_PATH_KEY] = str(root / engine_cache_key)
    return config


def profile_shapes(config: ModelConfig, dims: Mapping[str, list[int]]) -> dict[str, str]:
    """ONNX Runtime's TensorRT profile for every input of `config`: one profile over the whole batch range
    the dynamic batcher can form, so no batch size ever rebuilds the engine mid-traffic."""
    batches = dict(zip(PROFILE_SHAPE_KEYS, batch_profile(config), strict=True))
    return {
        key: ",".join(
            f"{tensor.name}:{'x'.join(str(d) for d in [batches[kind], *dims[tensor.name]])}"
            for tensor in config.input
        )
        for kind, key in PROFILE_SHAPE_KEYS.items()
    }
