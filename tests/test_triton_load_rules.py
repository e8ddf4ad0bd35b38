"""Every beit_model config variant, as beit-build completes it, against the exported model.onnx under the
load-time rules of the backend it names (tests/triton_load_rules.py, Triton 26.06, cited to source lines);
and the 24.10 template's wildcard dims, which the onnxruntime backend refuses, caught by the same rules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from beit_repository import model_config
from beit_repository.model_config import ModelConfig
from beit_repository.names import (
    CPU_VARIANT,
    DEFAULT_VARIANT,
    EMBEDDED_VARIANT,
    INT8_VARIANT,
    NETWORK_MODEL,
    TENSORRT_VARIANT,
)
from beit_repository.template import template_directory
from tests.triton_load_rules import load_errors, onnx_io, onnxruntime_errors, tensorrt_errors

TEMPLATE = template_directory()
VARIANTS = (DEFAULT_VARIANT, TENSORRT_VARIANT, CPU_VARIANT, EMBEDDED_VARIANT, INT8_VARIANT)
# Model-level parameters the onnxruntime backend reads (r26.06 src/onnxruntime.cc lines 214-345); any other
# key is ignored without a word, so a misspelt one would silently change nothing.
ORT_MODEL_PARAMETERS = frozenset(
    {
        "execution_mode",
        "inter_op_thread_count",
        "intra_op_thread_count",
        "enable_mem_arena",
        "enable_mem_pattern",
        "session.use_device_allocator_for_initializers",
    }
)


def network_configs(repository: Path) -> dict[str, ModelConfig]:
    paths = model_config.variants(repository / NETWORK_MODEL)
    return {name: model_config.read(path) for name, path in paths.items()}


def onnx_path(repository: Path) -> Path:
    return repository / NETWORK_MODEL / "1" / "model.onnx"


@pytest.fixture(params=["tiny_repository", "tiny_384_repository"])
def built(request: pytest.FixtureRequest) -> Path:
    repository: Path = request.getfixturevalue(request.param)
    return repository


def test_every_variant_is_checked_by_its_backends_rules(built: Path) -> None:
    configs = network_configs(built)
    assert set(configs) == set(VARIANTS)
    assert {name: config.backend for name, config in configs.items()} == {
        DEFAULT_VARIANT: "onnxruntime",
        TENSORRT_VARIANT: "tensorrt",
        CPU_VARIANT: "onnxruntime",
        EMBEDDED_VARIANT: "python",
        INT8_VARIANT: "python",
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_built_variant_loads_under_its_backends_rules(built: Path, variant: str) -> None:
    config = network_configs(built)[variant]
    assert load_errors(config, built / NETWORK_MODEL, onnx_path(built)) == []


def test_the_exported_graph_batches_on_its_first_axis_and_fixes_every_other(built: Path) -> None:
    model = onnx_io(onnx_path(built))
    assert set(model.inputs) == {"PIXEL_VALUES"}
    assert set(model.outputs) == {"LOGITS", "PROBABILITIES", "EMBEDDING"}
    for tensor in [*model.inputs.values(), *model.outputs.values()]:
        assert tensor.shape[0] == -1 and all(dim > 0 for dim in tensor.shape[1:]), tensor
    assert model.inputs["PIXEL_VALUES"].data_type == model_config_pb2.TYPE_UINT8
    assert {tensor.data_type for tensor in model.outputs.values()} == {model_config_pb2.TYPE_FP32}


def test_the_templates_wildcard_dims_are_what_the_onnxruntime_backend_refused(tiny_repository: Path) -> None:
    """The certain failure of the GPU default: config dims [3, -1, -1] and [-1] against a graph whose dims
    are fixed. The tensorrt backend accepts wildcards on either side; only the onnxruntime variants fail."""
    template = network_configs(TEMPLATE)
    model = onnx_io(onnx_path(tiny_repository))
    errors = onnxruntime_errors(template[DEFAULT_VARIANT], model)
    assert errors == [
        "model 'beit_model', tensor 'PIXEL_VALUES': the model expects 4 dimensions (shape [-1,3,224,224]) "
        "but the model configuration specifies 4 dimensions (shape [-1,3,-1,-1])",
        "model 'beit_model', tensor 'LOGITS': the model expects 2 dimensions (shape [-1,10]) but the model "
        "configuration specifies 2 dimensions (shape [-1,-1])",
        "model 'beit_model', tensor 'PROBABILITIES': the model expects 2 dimensions (shape [-1,10]) but the "
        "model configuration specifies 2 dimensions (shape [-1,-1])",
        "model 'beit_model', tensor 'EMBEDDING': the model expects 2 dimensions (shape [-1,32]) but the "
        "model configuration specifies 2 dimensions (shape [-1,-1])",
    ]
    assert onnxruntime_errors(template[CPU_VARIANT], model) == errors
    assert tensorrt_errors(template[TENSORRT_VARIANT], model) == []


def test_a_wrong_name_type_rank_or_batch_axis_is_refused_by_both_backends(tiny_repository: Path) -> None:
    built = network_configs(tiny_repository)
    model = onnx_io(onnx_path(tiny_repository))
    for variant, rules in ((DEFAULT_VARIANT, onnxruntime_errors), (TENSORRT_VARIANT, tensorrt_errors)):
        renamed = ModelConfig()
        renamed.CopyFrom(built[variant])
        renamed.output[0].name = "logits"
        assert rules(renamed, model) == [
            "unexpected inference output 'logits', allowed outputs are: EMBEDDING, LOGITS, PROBABILITIES"
        ]
        retyped = ModelConfig()
        retyped.CopyFrom(built[variant])
        retyped.input[0].data_type = model_config_pb2.TYPE_FP16
        assert len(rules(retyped, model)) == 1 and "TYPE_FP16" in rules(retyped, model)[0]
        reranked = ModelConfig()
        reranked.CopyFrom(built[variant])
        reranked.input[0].dims.append(1)
        assert "the model expects 4 dimensions" in " ".join(rules(reranked, model))
        unbatched = ModelConfig()
        unbatched.CopyFrom(built[variant])
        unbatched.max_batch_size = 0
        assert len(rules(unbatched, model)) == 4  # every tensor is one dim short without the batch axis


def test_the_onnxruntime_backend_refuses_a_config_missing_an_input(tiny_repository: Path) -> None:
    config = ModelConfig()
    config.CopyFrom(network_configs(tiny_repository)[DEFAULT_VARIANT])
    del config.input[:]
    assert onnxruntime_errors(config, onnx_io(onnx_path(tiny_repository))) == [
        "unable to load model 'beit_model', configuration expects 0 inputs, model provides 1"
    ]


def test_a_label_file_shorter_than_the_output_is_refused(tiny_repository: Path, tmp_path: Path) -> None:
    import shutil

    repository = Path(shutil.copytree(tiny_repository, tmp_path / "repository"))
    labels = repository / NETWORK_MODEL / "labels.txt"
    labels.write_text("".join(labels.read_text().splitlines(keepends=True)[:-1]))
    config = network_configs(repository)[DEFAULT_VARIANT]
    assert load_errors(config, repository / NETWORK_MODEL, onnx_path(repository)) == [
        "output 'PROBABILITIES' has dims [10] but labels.txt holds 9 labels: Triton labels classes past the "
        "file's end with nothing"
    ]
    config.output[1].label_filename = "../labels.txt"
    assert (
        "is outside model directory"
        in load_errors(config, repository / NETWORK_MODEL, onnx_path(repository))[0]
    )


def test_the_cpu_variant_sets_only_parameters_the_onnxruntime_backend_reads() -> None:
    parameters = set(network_configs(TEMPLATE)[CPU_VARIANT].parameters)
    assert parameters and parameters <= ORT_MODEL_PARAMETERS, parameters - ORT_MODEL_PARAMETERS
