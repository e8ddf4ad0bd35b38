"""Every model config in the repository, in every variant, against Triton's schema and against each other:
the committed template, and the configs a build completes for a checkpoint (224 and 384 pixels).

The GPU variants (config.pbtxt, configs/tensorrt.pbtxt) never load in this test environment (the embedded
Triton has no onnxruntime or tensorrt backend), so the agreement a server would check at load time is
checked here, statically, for all variants at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import model_config_pb2

from beit_repository import model_config
from beit_repository.model_config import ModelConfig
from beit_repository.names import (
    CLASSIFY_MODEL,
    CONFIG_FILE,
    CPU_VARIANT,
    DEFAULT_VARIANT,
    EMBED_MODEL,
    EMBEDDED_VARIANT,
    ENSEMBLES,
    INT8_VARIANT,
    MODELS,
    NETWORK_MODEL,
    PREPROCESS_MODEL,
    TENSORRT_VARIANT,
    VARIANTS_DIRECTORY,
)
from beit_repository.template import template_directory

TEMPLATE = template_directory()
GPU_VARIANTS = (DEFAULT_VARIANT, TENSORRT_VARIANT)

# Every key the onnxruntime backend of Triton 26.06 accepts for the "tensorrt" accelerator; it refuses to
# load a model on any other ("unknown parameter ... is provided for TensorRT Execution Accelerator").
# triton-inference-server/onnxruntime_backend, branch r26.06, src/onnxruntime.cc lines 479-711; the same keys
# as r24.10 (checked side by side).
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
# r26.06 src/onnxruntime.cc lines 479-496 (BF16 arrived after r24.10, which refused it).
ORT_PRECISION_MODES = frozenset({"FP32", "FP16", "BF16", "INT8"})


def variants(model: str, repository: Path = TEMPLATE) -> dict[str, ModelConfig]:
    """Every config a server could load for `model`, by variant name."""
    return {name: model_config.read(path) for name, path in model_config.variants(repository / model).items()}


def models(repository: Path = TEMPLATE) -> list[str]:
    return sorted(path.parent.name for path in repository.glob(f"*/{CONFIG_FILE}"))


def io_signature(config: ModelConfig) -> tuple[object, ...]:
    def tensors(items: Any) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
        return tuple(sorted((t.name, t.data_type, tuple(t.dims)) for t in items))

    return config.name, tensors(config.input), tensors(config.output)


def tensorrt_accelerator(config: ModelConfig) -> dict[str, str]:
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


@pytest.fixture(params=["tiny_repository", "tiny_384_repository"])
def built(request: pytest.FixtureRequest) -> Path:
    """A repository beit-build completed, at 224 and at 384 pixels."""
    repository: Path = request.getfixturevalue(request.param)
    return repository


def test_the_repository_has_the_four_models_of_the_design() -> None:
    assert models() == sorted(MODELS)
    assert [m for m in models() if variants(m)[DEFAULT_VARIANT].platform == "ensemble"] == sorted(ENSEMBLES)


@pytest.mark.parametrize(
    "path", model_config.config_files(TEMPLATE), ids=lambda p: str(p.relative_to(TEMPLATE))
)
def test_every_config_parses_against_tritons_schema_and_names_its_directory(path: Path) -> None:
    config = model_config.read(path)
    assert config.name == model_config.model_directory(path).name


def test_a_config_naming_another_model_or_breaking_the_schema_is_refused(tmp_path: Path) -> None:
    misnamed = tmp_path / "beit" / CONFIG_FILE
    misnamed.parent.mkdir()
    misnamed.write_text('name: "other"\n')
    with pytest.raises(model_config.ModelConfigError, match="sits in 'beit'"):
        model_config.read(misnamed)
    misnamed.write_text('name: "beit"\nno_such_field: 1\n')
    with pytest.raises(model_config.ModelConfigError, match="no_such_field"):
        model_config.read(misnamed)


def test_no_model_has_a_configs_config_pbtxt_so_the_name_config_selects_the_default() -> None:
    assert not list(TEMPLATE.glob(f"*/{VARIANTS_DIRECTORY}/{DEFAULT_VARIANT}.pbtxt"))


@pytest.mark.parametrize("model", MODELS)
def test_every_variant_of_a_model_has_the_same_name_inputs_and_outputs(model: str) -> None:
    signatures = {name: io_signature(config) for name, config in variants(model).items()}
    assert len(set(signatures.values())) == 1, signatures


@pytest.mark.parametrize("model", MODELS)
def test_every_built_variant_of_a_model_has_the_same_name_inputs_and_outputs(model: str, built: Path) -> None:
    signatures = {name: io_signature(config) for name, config in variants(model, built).items()}
    assert len(set(signatures.values())) == 1, signatures


@pytest.mark.parametrize("ensemble", ENSEMBLES)
@pytest.mark.parametrize("repository", ["template", "built"])
def test_ensemble_steps_match_every_variant_of_the_models_they_compose(
    ensemble: str, repository: str, request: pytest.FixtureRequest
) -> None:
    root = TEMPLATE if repository == "template" else request.getfixturevalue("tiny_384_repository")
    config = variants(ensemble, root)[DEFAULT_VARIANT]
    declared = {t.name: t for t in [*config.input, *config.output]}
    # Internal tensors: the type and dims each one is produced with, checked against every consumer.
    produced: dict[str, Any] = {t.name: t for t in config.input}
    for step in config.ensemble_scheduling.step:
        for variant_name, composing in variants(step.model_name, root).items():
            where = f"{ensemble} -> {step.model_name} ({variant_name})"
            inputs = {t.name: t for t in composing.input}
            outputs = {t.name: t for t in composing.output}
            assert config.max_batch_size <= composing.max_batch_size, where
            for key, tensor in step.input_map.items():
                assert key in inputs, f"{where}: no input {key}"
                assert tensor in produced, f"{where}: {tensor} is consumed before any step produces it"
                assert produced[tensor].data_type == inputs[key].data_type, f"{where}: {key} type"
                assert list(produced[tensor].dims) == list(inputs[key].dims), f"{where}: {key} dims"
            for key, tensor in step.output_map.items():
                assert key in outputs, f"{where}: no output {key}"
                if tensor in declared:
                    assert declared[tensor].data_type == outputs[key].data_type, f"{where}: {key} type"
                    assert list(declared[tensor].dims) == list(outputs[key].dims), f"{where}: {key} dims"
        for key, tensor in step.output_map.items():
            produced[tensor] = {t.name: t for t in variants(step.model_name, root)[DEFAULT_VARIANT].output}[
                key
            ]
    for output in config.output:
        assert output.name in produced, f"{ensemble}: no step produces {output.name}"


@pytest.mark.parametrize("variant", [DEFAULT_VARIANT, TENSORRT_VARIANT, EMBEDDED_VARIANT, INT8_VARIANT])
def test_every_beit_model_variant_labels_probabilities_and_nothing_else(variant: str) -> None:
    config = variants(NETWORK_MODEL)[variant]
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
            elif variant_name == CPU_VARIANT:
                assert config.backend == "onnxruntime", (model, variant_name)
                assert kinds == {model_config_pb2.ModelInstanceGroup.KIND_CPU}, (model, variant_name)
                assert not config.optimization.execution_accelerators.gpu_execution_accelerator
            elif model == NETWORK_MODEL:
                assert variant_name in GPU_VARIANTS
                assert kinds == {model_config_pb2.ModelInstanceGroup.KIND_GPU}, (model, variant_name)


def test_gpu_variants_use_the_backends_the_triton_container_has() -> None:
    found = variants(NETWORK_MODEL)
    assert found[DEFAULT_VARIANT].backend == "onnxruntime"
    assert found[TENSORRT_VARIANT].backend == "tensorrt"
    for config in (found[DEFAULT_VARIANT], found[TENSORRT_VARIANT]):
        assert config.HasField("dynamic_batching")
        assert all(size <= config.max_batch_size for size in config.dynamic_batching.preferred_batch_size)


def test_onnxruntime_tensorrt_accelerator_uses_only_keys_the_backend_accepts(built: Path) -> None:
    for repository in (TEMPLATE, built):
        parameters = tensorrt_accelerator(variants(NETWORK_MODEL, repository)[DEFAULT_VARIANT])
        assert set(parameters) <= ORT_TENSORRT_KEYS, set(parameters) - ORT_TENSORRT_KEYS
        assert parameters["precision_mode"] in ORT_PRECISION_MODES
        assert parameters["trt_engine_cache_enable"] in {"1", "true"}
        assert parameters["trt_engine_cache_path"].startswith("/")
        # One instance per GPU: engines built one after another, the later instances load the first's.
        assert parameters["trt_force_sequential_engine_build"] in {"1", "true"}


def test_the_engine_cache_is_a_directory_named_by_the_hash_of_the_built_model(
    tiny_repository: Path, tiny_384_repository: Path
) -> None:
    """ONNX Runtime keys a cached engine by graph structure, precision and GPU, never by weights: without a
    directory per model, a second checkpoint of one architecture would load the first one's engine."""
    import hashlib

    root = tensorrt_accelerator(variants(NETWORK_MODEL)[DEFAULT_VARIANT])["trt_engine_cache_path"]
    paths = []
    for built in (tiny_repository, tiny_384_repository):
        onnx_bytes = (built / NETWORK_MODEL / "1" / "model.onnx").read_bytes()
        path = tensorrt_accelerator(variants(NETWORK_MODEL, built)[DEFAULT_VARIANT])["trt_engine_cache_path"]
        assert path == f"{root}/{hashlib.sha256(onnx_bytes).hexdigest()[:16]}"
        paths.append(path)
    assert paths[0] != paths[1]
    # The timing cache holds no weights: one for all models, at the root.
    timing = tensorrt_accelerator(variants(NETWORK_MODEL, tiny_repository)[DEFAULT_VARIANT])
    assert timing["trt_timing_cache_path"] == root


def test_rebuilding_with_other_weights_of_the_same_architecture_moves_the_engine_cache(
    tiny_repository: Path, tmp_path: Path
) -> None:
    from beit_build import build_repository
    from tests.checkpoints import save_tiny_checkpoint

    repository = tmp_path / "repository"
    before = None
    for seed in (0, 1):
        build_repository(save_tiny_checkpoint(tmp_path / f"seed-{seed}", seed=seed), repository)
        after = tensorrt_accelerator(variants(NETWORK_MODEL, repository)[DEFAULT_VARIANT])
        assert after["trt_engine_cache_path"] != before
        before = after["trt_engine_cache_path"]


def test_the_template_leaves_every_checkpoint_dependent_size_to_the_build() -> None:
    """Dims, profile shapes and warmup dims depend on the checkpoint; a fixed size here would be wrong for
    every other checkpoint, so the template holds placeholders only."""
    config = variants(NETWORK_MODEL)[DEFAULT_VARIANT]
    assert not {"trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"} & set(
        tensorrt_accelerator(config)
    )
    assert all(not list(warmup_input.dims) for w in config.model_warmup for warmup_input in w.inputs.values())
    for model in MODELS:
        for config in variants(model).values():
            for tensor in [*config.input, *config.output]:
                assert tensor.name == "IMAGE" or -1 in tensor.dims, (model, tensor.name)


def image_size(repository: Path) -> list[int]:
    """[height, width] the checkpoint's preprocessing outputs, from the parameters the build wrote."""
    parameters = model_config.json_parameters(
        variants(PREPROCESS_MODEL, repository)[DEFAULT_VARIANT], ("do_center_crop", "crop_size", "size")
    )
    size = parameters["crop_size"] if parameters["do_center_crop"] else parameters["size"]
    return [size["height"], size["width"]]


def test_built_configs_carry_the_exported_graphs_exact_dims(built: Path) -> None:
    import onnx

    graph = onnx.load(str(built / NETWORK_MODEL / "1" / "model.onnx")).graph
    expected = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim[1:]] for v in [*graph.input, *graph.output]
    }
    assert expected["PIXEL_VALUES"] == [3, *image_size(built)]
    for model in MODELS:
        for variant_name, config in variants(model, built).items():
            for tensor in [*config.input, *config.output]:
                if tensor.name in expected:
                    assert list(tensor.dims) == expected[tensor.name], (model, variant_name, tensor.name)
    labels = (built / NETWORK_MODEL / "labels.txt").read_text().splitlines()
    assert [len(labels)] == expected["PROBABILITIES"]


def test_onnxruntime_tensorrt_profile_covers_every_batch_at_the_checkpoints_image_size(built: Path) -> None:
    config = variants(NETWORK_MODEL, built)[DEFAULT_VARIANT]
    shapes = profile_shapes(tensorrt_accelerator(config))
    (model_input,) = config.input
    assert {name for name, _ in shapes.values()} == {model_input.name}
    batch = {kind: dims[0] for kind, (_, dims) in shapes.items()}
    assert batch["min"] == 1
    assert batch["max"] == config.max_batch_size
    assert batch["opt"] in config.dynamic_batching.preferred_batch_size
    assert all(dims[1:] == [3, *image_size(built)] for _, dims in shapes.values())


def test_warmup_uses_the_checkpoints_image_size_and_a_batch_it_can_take(built: Path) -> None:
    config = variants(NETWORK_MODEL, built)[DEFAULT_VARIANT]
    assert config.model_warmup
    for warmup in config.model_warmup:
        assert 1 <= warmup.batch_size <= config.max_batch_size
        (name,) = warmup.inputs
        assert list(warmup.inputs[name].dims) == [3, *image_size(built)]


def test_classify_and_embed_ensembles_output_the_heads_and_embeddings_widths(built: Path) -> None:
    parameters = model_config.json_parameters(
        variants(CLASSIFY_MODEL, built)[DEFAULT_VARIANT], ("num_labels", "embedding_size")
    )
    (probabilities,) = variants(CLASSIFY_MODEL, built)[DEFAULT_VARIANT].output
    (embedding,) = variants(EMBED_MODEL, built)[DEFAULT_VARIANT].output
    assert list(probabilities.dims) == [parameters["num_labels"]]
    assert list(embedding.dims) == [parameters["embedding_size"]]
