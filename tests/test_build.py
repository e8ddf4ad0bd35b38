from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from transformers import BeitImageProcessorPil, BertConfig, ViTConfig
from transformers.image_utils import PILImageResampling

from beit_build import (
    CheckpointNotFoundError,
    LabelsError,
    PreprocessingError,
    TemplateWriteError,
    UnsupportedCheckpointError,
    VerificationError,
    build_repository,
)
from beit_build.build import is_built
from beit_build.check_engine import check_engine
from beit_build.checkpoint import load_checkpoint
from beit_build.cli import main
from beit_build.errors import EngineCheckError
from beit_build.export import (
    OPSET,
    NetworkOutputs,
    PixelNormalization,
    export_onnx,
    onnx_node_count,
    prepare_for_export,
)
from beit_build.families import FAMILIES, Checkpoint, family_of
from beit_build.labels import imagenet22k_labels, read_labels
from beit_build.layer_scale import fold_layer_scale, layer_scale_report
from beit_build.random_checkpoint import random_config, random_image_processor
from beit_build.repository import ONNX_PATH, PLAN_PATH, atomic_path
from beit_build.verify import verify_onnx
from beit_preprocessing import PARAMETER_KEYS as PREPROCESSING_KEYS
from beit_preprocessing import PreprocessingConfig, normalization_table, normalize
from beit_repository import model_config
from beit_repository.names import (
    DEFAULT_REPOSITORY,
    NETWORK_MODEL,
    NETWORK_OUTPUTS,
    PIXEL_VALUES,
    PREPROCESS_MODEL,
)
from beit_repository.template import template_directory
from tests.checkpoints import save_tiny_checkpoint

RESOLUTION = (224, 224)
GENERATED_KEYS = (
    "checkpoint",
    "random_weights",
    "num_labels",
    "embedding_size",
    "multi_label",
    *PREPROCESSING_KEYS,
)


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint: Path) -> Checkpoint:
    return load_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def built(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("built")
    build_repository(tiny_checkpoint, repository)
    return repository


def pixels(batch: int = 3, seed: int = 1) -> np.ndarray:
    """What the preprocessor hands the network: uint8 [batch, 3, H, W]."""
    return np.random.default_rng(seed).integers(0, 256, (batch, 3, *RESOLUTION), dtype=np.uint8)


def normalized(batch: np.ndarray, checkpoint: Checkpoint) -> torch.Tensor:
    """What the checkpoint's image processor would hand its PyTorch model for the same pixels."""
    return torch.from_numpy(normalize(batch, checkpoint.preprocessing))


def run_onnx(path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = session.run(list(NETWORK_OUTPUTS), {PIXEL_VALUES: batch})
    return dict(zip(NETWORK_OUTPUTS, outputs, strict=True))


def parameters_of(config_path: Path) -> dict[str, str]:
    return model_config.parameters(model_config.read(config_path))


def snapshot(repository: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(repository)): path.read_bytes()
        for path in repository.rglob("*")
        if path.is_file()
    }


# 1. loading


def test_vit_and_text_checkpoints_are_refused_naming_what_was_found(tmp_path: Path) -> None:
    for name, config in {"vit": ViTConfig(), "bert": BertConfig()}.items():
        config.save_pretrained(tmp_path / name)
        with pytest.raises(UnsupportedCheckpointError, match=f"'{name}'"):
            load_checkpoint(tmp_path / name)


def test_data2vec_vision_checkpoint_builds_and_matches_pytorch(tmp_path: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "data2vec", data2vec=True, num_labels=7)
    result = build_repository(checkpoint, tmp_path / "repository")
    assert result.num_labels == 7
    assert max(result.max_abs_diff.values()) < 1e-4


# 2. export


class _ShowNormalized(torch.nn.Module):
    """A stand-in network that shows what it was given: the normalized pixels, flat, as all three outputs."""

    def __init__(self, preprocessing: PreprocessingConfig) -> None:
        super().__init__()
        self.normalization = PixelNormalization(preprocessing)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat = self.normalization(pixels).flatten(1)
        return flat, flat, flat


@pytest.mark.parametrize(
    ("preprocessing", "lookup"),
    [
        (PreprocessingConfig(), False),
        (PreprocessingConfig(image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225)), False),
        (
            PreprocessingConfig(
                pipeline="torchvision", image_mean=(0.485, 0.456, 0.406), image_std=(0.229, 0.224, 0.225)
            ),
            False,
        ),
        (PreprocessingConfig(do_normalize=False), False),
        (PreprocessingConfig(do_rescale=False, do_normalize=False), False),
        # No float32 division reproduces a float64 multiplication by 0.00392 for every value.
        (PreprocessingConfig(rescale_factor=0.00392), True),
    ],
    ids=["half", "imagenet", "torchvision-imagenet", "rescale-only", "none", "lookup"],
)
def test_the_graph_normalizes_uint8_pixels_bit_for_bit_as_the_image_processor(
    preprocessing: PreprocessingConfig, lookup: bool, tmp_path: Path
) -> None:
    """Through ONNX Runtime with its default graph optimizations, on every value in every channel."""
    path = tmp_path / "model.onnx"
    export_onnx(_ShowNormalized(preprocessing), path, (16, 16))
    assert any(node.op_type == "Gather" for node in onnx.load(str(path)).graph.node) == lookup
    every_value = np.broadcast_to(np.arange(256, dtype=np.uint8).reshape(16, 16), (1, 3, 16, 16))
    random = np.random.default_rng(0).integers(0, 256, (2, 3, 16, 16), dtype=np.uint8)
    batch = np.concatenate([every_value, random])
    expected = normalize(batch, preprocessing)
    assert np.array_equal(run_onnx(path, batch)["LOGITS"], expected.reshape(3, -1))
    assert np.array_equal(expected[0].reshape(3, 256), normalization_table(preprocessing))


def test_onnx_has_our_names_dynamic_batch_only_and_single_op_layer_norm(
    built: Path, tiny: Checkpoint
) -> None:
    model = onnx.load(str(built / ONNX_PATH))
    assert model.opset_import[0].version == OPSET
    (graph_input,) = model.graph.input
    assert graph_input.name == PIXEL_VALUES
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = [dim.dim_param or dim.dim_value for dim in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 224, 224]
    assert [output.name for output in model.graph.output] == list(NETWORK_OUTPUTS)
    output_dims = {
        o.name: [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output
    }
    assert output_dims == {
        "LOGITS": ["batch", 10],
        "PROBABILITIES": ["batch", 10],
        "EMBEDDING": ["batch", 32],
    }
    layer_norms = [node.name for node in model.graph.node if node.op_type == "LayerNormalization"]
    # Named as the checkpoint's modules are: the TensorRT step pins these names to FP32.
    assert layer_norms and all(name.startswith("/beit/") for name in layer_norms), layer_norms
    outputs = run_onnx(built / ONNX_PATH, pixels(batch=3))
    assert outputs["LOGITS"].shape == (3, tiny.model.config.num_labels)
    assert outputs["EMBEDDING"].shape == (3, tiny.model.config.hidden_size)
    np.testing.assert_allclose(outputs["PROBABILITIES"].sum(-1), 1.0, atol=1e-5)


def test_embedding_is_the_backbone_pooler_output(built: Path, tiny: Checkpoint) -> None:
    batch = pixels(batch=2)
    with torch.no_grad():
        pooled = tiny.model.base_model(normalized(batch, tiny)).pooler_output.numpy()
    np.testing.assert_allclose(run_onnx(built / ONNX_PATH, batch)["EMBEDDING"], pooled, atol=1e-5)


def test_multi_label_head_exports_sigmoid_probabilities(tmp_path: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "multi", multi_label=True)
    result = build_repository(checkpoint, tmp_path / "repository")
    outputs = run_onnx(result.onnx_path, pixels(batch=2))
    np.testing.assert_allclose(outputs["PROBABILITIES"], 1 / (1 + np.exp(-outputs["LOGITS"])), atol=1e-6)
    assert parameters_of(result.repository / "beit_model" / "config.pbtxt")["multi_label"] == "true"


# 3. relative position bias computed once


def test_precomputed_bias_graph_is_much_smaller_than_naive_export_and_equal(
    tiny: Checkpoint, tmp_path: Path
) -> None:
    naive, prepared = tmp_path / "naive.onnx", tmp_path / "prepared.onnx"
    export_onnx(NetworkOutputs(tiny, normalization=PixelNormalization(tiny.preprocessing)), naive, RESOLUTION)
    export_onnx(prepare_for_export(tiny), prepared, RESOLUTION)
    assert onnx_node_count(prepared) * 3 < onnx_node_count(naive)
    batch = pixels()
    with torch.no_grad():
        expected = NetworkOutputs(tiny)(normalized(batch, tiny))
    for name, want in zip(NETWORK_OUTPUTS, expected, strict=True):
        np.testing.assert_allclose(run_onnx(prepared, batch)[name], want.numpy(), atol=1e-4)


# 4. verification


def test_build_reports_small_differences_and_verification_refuses_a_mismatch(
    built: Path, tiny: Checkpoint
) -> None:
    differences = verify_onnx(built / ONNX_PATH, tiny, batch_size=3)
    assert set(differences) == set(NETWORK_OUTPUTS)
    assert max(differences.values()) < 1e-4
    other = copy.deepcopy(tiny.model)
    with torch.no_grad():
        other.classifier.bias.add_(1.0)
    with pytest.raises(VerificationError, match="LOGITS"):
        verify_onnx(built / ONNX_PATH, dataclasses.replace(tiny, model=other))


# 5. preprocessing parameters


def test_preprocessing_parameters_come_from_the_checkpoint(tmp_path: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "bicubic", resample=3)
    parameters = load_checkpoint(checkpoint).preprocessing.to_parameters()
    assert set(parameters) == set(PREPROCESSING_KEYS)
    assert json.loads(parameters["resample"]) == 3
    assert json.loads(parameters["size"]) == {"height": 224, "width": 224}
    assert json.loads(parameters["image_mean"]) == [0.5, 0.5, 0.5]
    assert json.loads(parameters["rescale_factor"]) == pytest.approx(1 / 255)


def test_export_resolution_is_the_center_crop_when_cropping(tmp_path: Path) -> None:
    processor = BeitImageProcessorPil(size={"shortest_edge": 256}, do_center_crop=True, crop_size=224)
    checkpoint = save_tiny_checkpoint(tmp_path / "crop")
    processor.save_pretrained(checkpoint)
    assert load_checkpoint(checkpoint).resolution == (224, 224)
    other = save_tiny_checkpoint(tmp_path / "crop-384", image_size=384)
    processor.save_pretrained(other)
    with pytest.raises(PreprocessingError, match="384"):
        load_checkpoint(other)


def test_processor_disagreeing_with_image_size_fails_before_export(tmp_path: Path) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path / "mismatch")
    BeitImageProcessorPil(size={"height": 256, "width": 256}, do_center_crop=False).save_pretrained(
        checkpoint
    )
    with pytest.raises(PreprocessingError, match="256x256"):
        build_repository(checkpoint, tmp_path / "repository")
    assert not (tmp_path / "repository").exists()


def test_written_parameters_parse_as_a_preprocessing_config(built: Path) -> None:
    parameters = parameters_of(built / PREPROCESS_MODEL / "config.pbtxt")
    config = PreprocessingConfig.from_parameters(parameters)
    assert config.output_size == RESOLUTION
    assert config.resample == 2


# 6. labels


def test_shipped_imagenet22k_labels_are_the_sorted_fall11_lemmas() -> None:
    shipped = importlib.resources.files("beit_build") / "data" / "imagenet22k_labels.txt"
    assert shipped.is_file()
    labels = imagenet22k_labels()
    assert len(labels) == 21_841
    assert (labels[0], labels[2397], labels[9205]) == ("organism, being", "tabby, tabby cat", "picture frame")


def test_22k_head_gets_the_22k_list_and_others_their_id2label(tmp_path: Path) -> None:
    hub_like = save_tiny_checkpoint(
        tmp_path / "22k", num_labels=21_841, id2label={i: f"hub {i}" for i in range(21_841)}
    )
    assert list(load_checkpoint(hub_like).labels) == imagenet22k_labels()
    small = save_tiny_checkpoint(tmp_path / "small", num_labels=3, id2label={2: "c", 0: "a", 1: "b \n x"})
    assert load_checkpoint(small).labels == ("a", "b x", "c")


def test_labels_file_must_match_the_head(tmp_path: Path) -> None:
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("x\ny\nz\n")
    assert read_labels(labels_file, expected=3) == ["x", "y", "z"]
    labels_file.write_text("x\ny\n")
    with pytest.raises(LabelsError, match="2 labels.*3"):
        read_labels(labels_file, expected=3)


def test_cli_refuses_a_short_labels_file_with_a_clear_error(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("only one\n")
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "--model",
                str(tiny_checkpoint),
                "--repository",
                str(tmp_path / "r"),
                "--labels",
                str(labels_file),
            ]
        )
    assert exit_info.value.code == 1
    assert "1 labels, the checkpoint's head has 10" in capsys.readouterr().err


# 7. the repository


def test_built_repository_has_template_configs_artifacts_and_parameters_everywhere(
    built: Path, tiny: Checkpoint
) -> None:
    template = template_directory()
    expected = {path.relative_to(template) for path in model_config.config_files(template)}
    assert {path.relative_to(built) for path in model_config.config_files(built)} == expected
    assert len(expected) >= 6
    assert (built / "beit_model" / "labels.txt").read_text().splitlines() == [f"class {i}" for i in range(10)]
    assert not list(built.rglob("*.tmp"))
    for config_path in model_config.config_files(built):
        assert config_path.read_text().startswith("# Generated by beit-build")
        parameters = parameters_of(config_path)
        assert {key: json.loads(parameters[key]) for key in GENERATED_KEYS[1:5]} == {
            "random_weights": False,
            "num_labels": 10,
            "embedding_size": 32,
            "multi_label": False,
        }
        assert json.loads(parameters["checkpoint"]) == tiny.name
    hand_written = parameters_of(built / PREPROCESS_MODEL / "config.pbtxt")
    assert hand_written["mode"] == "exact"


def test_rebuilding_is_idempotent_and_logs_each_step(
    built: Path, tiny_checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repository = tmp_path / "again"
    shutil.copytree(built, repository)
    before = snapshot(repository)
    with caplog.at_level(logging.INFO, logger="beit_build"):
        build_repository(tiny_checkpoint, repository)
    after = snapshot(repository)
    assert before.keys() == after.keys()
    assert {name for name in before if before[name] != after[name]} == set()
    messages = " ".join(record.getMessage() for record in caplog.records)
    for step in ("loading", "exporting", "verifying", "writing"):
        assert step in messages


def test_a_rebuild_removes_the_tensorrt_plan_of_the_previous_export(
    built: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    repository = shutil.copytree(built, tmp_path / "with-plan")
    (repository / PLAN_PATH).write_bytes(b"engine built from the previous model.onnx")
    build_repository(tiny_checkpoint, repository)
    assert not (repository / PLAN_PATH).exists()


def test_builds_never_write_into_the_template(tiny_checkpoint: Path) -> None:
    template = template_directory()
    before = snapshot(template)
    for target in (template, template / NETWORK_MODEL):
        with pytest.raises(TemplateWriteError, match="template"):
            build_repository(tiny_checkpoint, target)
    assert snapshot(template) == before


def test_the_default_build_output_is_ignored_by_git() -> None:
    """`make serve` and a bare beit-build write the default repository: it must never show in git status."""
    root = Path(__file__).resolve().parents[1]
    probe = Path(DEFAULT_REPOSITORY, NETWORK_MODEL, "config.pbtxt")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=root, check=False)
    assert ignored.returncode == 0, f"{probe} is not ignored by git"
    assert not Path(DEFAULT_REPOSITORY).is_absolute()


def test_failed_atomic_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [target]


# 9. random checkpoints


def test_random_sizes_have_the_published_architectures() -> None:
    base, large = random_config("base"), random_config("large")
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.intermediate_size) == (
        768,
        12,
        12,
        3072,
    )
    assert base.num_labels == 21_841
    assert (
        large.hidden_size,
        large.num_hidden_layers,
        large.num_attention_heads,
        large.intermediate_size,
    ) == (
        1024,
        24,
        16,
        4096,
    )
    assert large.num_labels == 1000


def test_random_data2vec_vision_large_is_beit_large_in_data2vec_classes_with_bicubic_resizing() -> None:
    config = random_config("data2vec-vision-large")
    assert config.model_type == "data2vec-vision"
    dims = (
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.intermediate_size,
    )
    assert dims == (1024, 24, 16, 4096) and config.num_labels == 1000
    assert config.use_relative_position_bias and config.use_mean_pooling
    assert random_image_processor("data2vec-vision-large").resample == PILImageResampling.BICUBIC
    assert random_image_processor("large").resample == PILImageResampling.BILINEAR


def test_random_tiny_build_is_marked_random(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    main(["--random", "tiny", "--repository", str(tmp_path)])
    assert any(
        record.levelno == logging.WARNING and "RANDOM" in record.getMessage() for record in caplog.records
    )
    parameters = parameters_of(tmp_path / "beit_model" / "config.pbtxt")
    assert json.loads(parameters["random_weights"]) is True
    assert json.loads(parameters["checkpoint"]) == "random-tiny"
    assert json.loads(parameters["resample"]) == 2


# 11. layer scale


@pytest.mark.parametrize("data2vec", [False, True], ids=["beit", "data2vec-vision"])
def test_folding_layer_scale_keeps_the_function(data2vec: bool, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(save_tiny_checkpoint(tmp_path, data2vec=data2vec))
    family, original = checkpoint.family, copy.deepcopy(checkpoint.model)
    with torch.no_grad():
        for scale in family.layer_scales(original):
            if scale.attribute == "lambda_1":
                getattr(scale.layer, scale.attribute).uniform_(1e-6, 1e-5)
    report = layer_scale_report(original, family.layer_scales(original))
    assert report.fp16_unsafe and report.min_abs_layer_scale is not None
    folded = copy.deepcopy(original)
    assert fold_layer_scale(family.layer_scales(folded)) == 4
    assert family.layer_scales(folded) == []
    batch = normalized(pixels(batch=2), checkpoint)
    with torch.no_grad():
        np.testing.assert_allclose(folded(batch).logits, original(batch).logits, rtol=1e-5, atol=1e-6)
    assert not layer_scale_report(checkpoint.model, family.layer_scales(checkpoint.model)).fp16_unsafe


def test_each_family_is_recognized_by_its_config_and_nothing_else_is() -> None:
    assert [family.name for family in FAMILIES] == ["beit", "data2vec-vision", "timm-beit"]
    assert family_of({"model_type": "beit"}) is FAMILIES[0]
    assert family_of({"model_type": "data2vec-vision"}) is FAMILIES[1]
    assert family_of({"architecture": "beit_base_patch16_224", "model_type": "timm_wrapper"}) is FAMILIES[2]
    assert family_of({"model_type": "vit"}) is None
    assert family_of({"architecture": "vit_base_patch16_224", "model_type": "timm_wrapper"}) is None


def test_export_steps_know_no_checkpoint_family_but_through_the_registry() -> None:
    """A new family touches its own module only: the generic steps import no model classes."""
    package = Path(__file__).resolve().parents[1] / "build" / "beit_build"
    for module in ("checkpoint.py", "layer_scale.py", "relative_position_bias.py", "export.py", "build.py"):
        assert "transformers.models" not in (package / module).read_text(), module


# 10. check-engine


def test_check_engine_agrees_with_pytorch_on_onnx_runtime(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = check_engine(built, engine="onnx", batch_size=3)
    assert (result.images, result.top1_agreement, result.top5_agreement) == (3, 1.0, 1.0)
    assert result.max_abs_probability_diff < 1e-5
    main(["check-engine", "--repository", str(built), "--batch-size", "2"])
    assert "top-1 agreement 100.0%" in capsys.readouterr().out


def test_check_engine_refuses_an_engine_this_onnxruntime_lacks(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(EngineCheckError, match="TensorrtExecutionProvider"):
        check_engine(built, engine="tensorrt")


def test_skip_if_built_skips_only_a_complete_build_of_the_same_checkpoint(
    built: Path, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert is_built(built, str(tiny_checkpoint))
    assert not is_built(built, "microsoft/beit-base-patch16-224")
    assert not is_built(tmp_path, str(tiny_checkpoint))
    before = snapshot(built)
    main(["--model", str(tiny_checkpoint), "--repository", str(built), "--skip-if-built"])
    assert "not rebuilding" in capsys.readouterr().out
    assert snapshot(built) == before


def test_skip_if_built_rebuilds_a_repository_whose_graph_takes_float_pixels(
    built: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """Built before the graph took uint8: today's preprocessor would send it pixels it refuses."""
    old = tmp_path / "old"
    shutil.copytree(built, old)
    model = onnx.load(str(old / ONNX_PATH))
    model.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.save(model, str(old / ONNX_PATH))
    assert is_built(built, str(tiny_checkpoint))
    assert not is_built(old, str(tiny_checkpoint))


def test_a_missing_checkpoint_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no-such-checkpoint is neither a checkpoint folder"):
        load_checkpoint(tmp_path / "no-such-checkpoint")
