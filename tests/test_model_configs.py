"""Every model config in the repository, in every variant, against Triton's schema and against each other.

The GPU variants (config.pbtxt, configs/tensorrt.pbtxt) never load in this test environment (the embedded
Triton has no onnxruntime or tensorrt backend), so the agreement a server would check at load time is
checked here, statically, for all variants at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
GPU_VARIANTS = ("config.pbtxt", "tensorrt.pbtxt")
EMBEDDED_VARIANT = "embedded.pbtxt"

# Every key the onnxruntime backend of Triton 24.10 accepts for the "tensorrt" accelerator; it refuses to
# load a model on any other (triton-inference-server/onnxruntime_backend, branch r24.10, src/onnxruntime.cc).
ORT_TENSORRT_KEYS = frozenset(
    {
        "precision_mode",
        "max_workspace_size_bytes",
        "trt_max_partition_iterations",
        "trt_min_subgraph_size",
        "int8_calibration_table_name",
        "int8_use_native_calibration_table",
        "trt_dla_enable",
        "trt_dla_core",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_cache_prefix",
        "trt_dump_subgraphs",
        "trt_force_sequential_engine_build",
        "trt_context_memory_sharing_enable",
        "trt_layer_norm_fp32_fallback",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_detailed_build_log",
        "trt_build_heuristics_enable",
        "trt_sparsity_enable",
        "trt_builder_optimization_level",
        "trt_auxiliary_streams",
        "trt_tactic_sources",
        "trt_extra_plugin_lib_paths",
        "trt_profile_min_shapes",
        "trt_profile_max_shapes",
        "trt_profile_opt_shapes",
        "trt_cuda_graph_enable",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
    }
)
# BF16 only arrived in later releases of the backend; 24.10 rejects it.
ORT_PRECISION_MODES = frozenset({"FP32", "FP16", "INT8"})


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def config_files() -> list[Path]:
    return sorted(REPOSITORY.glob("*/config.pbtxt")) + sorted(REPOSITORY.glob("*/configs/*.pbtxt"))


def variants(model: str) -> dict[str, model_config_pb2.ModelConfig]:
    """Every config a server could load for `model`, keyed by file name."""
    directory = REPOSITORY / model
    files = [directory / "config.pbtxt", *sorted((directory / "configs").glob("*.pbtxt"))]
    return {path.name: parse(path) for path in files}


def models() -> list[str]:
    return sorted(path.parent.name for path in REPOSITORY.glob("*/config.pbtxt"))


def ensembles() -> list[str]:
    return [model for model in models() if parse(REPOSITORY / model / "config.pbtxt").platform == "ensemble"]


def io_signature(config: model_config_pb2.ModelConfig) -> tuple[object, ...]:
    def tensors(items: Any) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
        return tuple(sorted((t.name, t.data_type, tuple(t.dims)) for t in items))

    return config.name, tensors(config.input), tensors(config.output)


def tensorrt_accelerator(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    (accelerator,) = (
        a
        for a in config.optimization.execution_accelerators.gpu_execution_accelerator
        if a.name == "tensorrt"
    )
    return dict(accelerator.parameters)


def profile_shapes(parameters: dict[str, str]) -> dict[str, tuple[str, list[int]]]:
    shapes = {}
    for kind in ("min", "opt", "max"):
        (entry,) = parameters[f"trt_profile_{kind}_shapes"].split(",")
        name, dims = entry.split(":")
        shapes[kind] = (name, [int(d) for d in dims.split("x")])
    return shapes


def test_the_repository_has_the_four_models_of_the_design() -> None:
    assert models() == ["beit", "beit_embedding", "beit_model", "beit_preprocess"]
    assert ensembles() == ["beit", "beit_embedding"]


@pytest.mark.parametrize("path", config_files(), ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_every_config_parses_against_tritons_schema_and_names_its_directory(path: Path) -> None:
    config = parse(path)
    model_dir = path.parent if path.name == "config.pbtxt" else path.parent.parent
    assert config.name == model_dir.name


def test_no_model_has_a_configs_config_pbtxt_so_the_name_config_selects_the_default() -> None:
    assert not list(REPOSITORY.glob("*/configs/config.pbtxt"))


@pytest.mark.parametrize("model", models())
def test_every_variant_of_a_model_has_the_same_name_inputs_and_outputs(model: str) -> None:
    signatures = {name: io_signature(config) for name, config in variants(model).items()}
    assert len(set(signatures.values())) == 1, signatures


@pytest.mark.parametrize("ensemble", ["beit", "beit_embedding"])
def test_ensemble_steps_match_every_variant_of_the_models_they_compose(ensemble: str) -> None:
    config = parse(REPOSITORY / ensemble / "config.pbtxt")
    declared = {t.name: t.data_type for t in [*config.input, *config.output]}
    # Internal tensors: the type each one is produced with, checked against every consumer.
    produced: dict[str, int] = {t.name: t.data_type for t in config.input}
    for step in config.ensemble_scheduling.step:
        for variant_name, composing in variants(step.model_name).items():
            where = f"{ensemble} -> {step.model_name} ({variant_name})"
            inputs = {t.name: t for t in composing.input}
            outputs = {t.name: t for t in composing.output}
            assert config.max_batch_size <= composing.max_batch_size, where
            for key, tensor in step.input_map.items():
                assert key in inputs, f"{where}: no input {key}"
                assert tensor in produced, f"{where}: {tensor} is consumed before any step produces it"
                assert produced[tensor] == inputs[key].data_type, f"{where}: {key} type"
            for key, tensor in step.output_map.items():
                assert key in outputs, f"{where}: no output {key}"
                if tensor in declared:
                    assert declared[tensor] == outputs[key].data_type, f"{where}: {key} type"
        for key, tensor in step.output_map.items():
            produced[tensor] = {
                t.name: t.data_type for t in parse(REPOSITORY / step.model_name / "config.pbtxt").output
            }[key]
    for output in config.output:
        assert output.name in produced, f"{ensemble}: no step produces {output.name}"


def test_internal_pixel_values_have_the_same_shape_on_both_sides_in_every_variant() -> None:
    (produced,) = [t for t in parse(REPOSITORY / "beit_preprocess" / "config.pbtxt").output]
    for variant_name, config in variants("beit_model").items():
        (consumed,) = config.input
        assert (consumed.name, consumed.data_type, list(consumed.dims)) == (
            produced.name,
            produced.data_type,
            list(produced.dims),
        ), variant_name


@pytest.mark.parametrize("variant", ["config.pbtxt", "tensorrt.pbtxt", "embedded.pbtxt"])
def test_every_beit_model_variant_labels_probabilities_and_nothing_else(variant: str) -> None:
    config = variants("beit_model")[variant]
    labelled = {t.name: t.label_filename for t in config.output if t.label_filename}
    assert labelled == {"PROBABILITIES": "labels.txt"}


def test_gpu_variants_run_on_gpus_and_embedded_variants_on_cpus() -> None:
    for model in models():
        for variant_name, config in variants(model).items():
            kinds = {group.kind for group in config.instance_group}
            if config.platform == "ensemble":
                assert not kinds, f"{model}: ensembles take no instance_group"
            elif variant_name == EMBEDDED_VARIANT or config.backend == "python":
                assert kinds == {model_config_pb2.ModelInstanceGroup.KIND_CPU}, (model, variant_name)
            elif model == "beit_model":
                assert variant_name in GPU_VARIANTS
                assert kinds == {model_config_pb2.ModelInstanceGroup.KIND_GPU}, (model, variant_name)


def test_gpu_variants_use_the_backends_the_triton_container_has() -> None:
    found = variants("beit_model")
    assert found["config.pbtxt"].backend == "onnxruntime"
    assert found["tensorrt.pbtxt"].backend == "tensorrt"
    for config in (found["config.pbtxt"], found["tensorrt.pbtxt"]):
        assert config.HasField("dynamic_batching")
        assert all(size <= config.max_batch_size for size in config.dynamic_batching.preferred_batch_size)


def test_onnxruntime_tensorrt_accelerator_uses_only_keys_the_backend_accepts() -> None:
    parameters = tensorrt_accelerator(variants("beit_model")["config.pbtxt"])
    assert set(parameters) <= ORT_TENSORRT_KEYS, set(parameters) - ORT_TENSORRT_KEYS
    assert parameters["precision_mode"] in ORT_PRECISION_MODES
    assert parameters["trt_engine_cache_enable"] in {"1", "true"}
    assert parameters["trt_engine_cache_path"].startswith("/")


def test_onnxruntime_tensorrt_profile_covers_every_batch_the_batcher_can_form() -> None:
    config = variants("beit_model")["config.pbtxt"]
    shapes = profile_shapes(tensorrt_accelerator(config))
    (model_input,) = config.input
    assert {name for name, _ in shapes.values()} == {model_input.name}
    batch = {kind: dims[0] for kind, (_, dims) in shapes.items()}
    assert batch["min"] == 1
    assert batch["max"] == config.max_batch_size
    assert batch["opt"] in config.dynamic_batching.preferred_batch_size
    image = {tuple(dims[1:]) for _, dims in shapes.values()}
    assert len(image) == 1
    assert next(iter(image))[0] == model_input.dims[0]


def test_warmup_uses_the_profiles_image_size_and_a_batch_it_can_take() -> None:
    config = variants("beit_model")["config.pbtxt"]
    (_, max_dims) = profile_shapes(tensorrt_accelerator(config))["max"]
    assert config.model_warmup
    for warmup in config.model_warmup:
        assert 1 <= warmup.batch_size <= config.max_batch_size
        (name,) = warmup.inputs
        assert list(warmup.inputs[name].dims) == max_dims[1:]


def test_profile_image_size_matches_the_checkpoint_parameters_a_build_writes(tiny_repository: Path) -> None:
    config = text_format.Parse(
        (tiny_repository / "beit_model" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
    )
    parameters = {key: json.loads(value.string_value) for key, value in config.parameters.items()}
    size = parameters["crop_size"] if parameters.get("do_center_crop") else parameters["size"]
    (_, max_dims) = profile_shapes(tensorrt_accelerator(config))["max"]
    assert max_dims[2:] == [size["height"], size["width"]], (
        "the TensorRT profile and warmup in beit_model/config.pbtxt are written for another image size"
    )
