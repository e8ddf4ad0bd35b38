"""The template's model configs completed for one checkpoint.

The template (model_repository/) holds what is true of every checkpoint; a build adds what depends on the
checkpoint: its parameters (JSON text, which the preprocessor and clients read), the exact tensor dims of the
exported graph, and the image size inside TensorRT profile shapes and warmup inputs. The onnxruntime backend
refuses a config dim of -1 where the model's own dim is fixed (onnxruntime_backend `CompareDimsSupported`), so
the dims are written, never left as wildcards.
"""

from __future__ import annotations

from collections.abc import Mapping

from beit_repository.model_config import ModelConfig, batch_profile, set_parameters

TENSORRT_ACCELERATOR = "tensorrt"
PROFILE_SHAPE_KEYS = {
    "min": "trt_profile_min_shapes",
    "opt": "trt_profile_opt_shapes",
    "max": "trt_profile_max_shapes",
}


def complete(
    template: ModelConfig, parameters: Mapping[str, str], dims: Mapping[str, list[int]]
) -> ModelConfig:
    """A copy of `template` with `parameters` set and every tensor named in `dims` (graph tensor -> dims after
    the batch axis) given those dims: inputs, outputs, warmup inputs and TensorRT profile shapes."""
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
