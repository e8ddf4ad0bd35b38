"""timm checkpoints against what timm itself computes, without timm: the golden fixture in
tests/fixtures/timm (tiny timm BEiTs saved by timm's hub writer, timm's eval-transform pixels and
probabilities; tests/fixtures/timm/README.md says how to regenerate it)."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from beit_build import PreprocessingError, UnsupportedCheckpointError, build_repository
from beit_build.check_engine import check_engine
from beit_build.checkpoint import load_checkpoint
from beit_build.families import FAMILIES, family_of
from beit_build.families.timm_beit import ARCHITECTURES, KEY_TABLE, timm_labels, timm_preprocessing
from beit_build.labels import (
    IMAGENET1K_LABELS_PATH,
    IMAGENET22K_LABELS_PATH,
    imagenet1k_labels,
    imagenet22k_labels,
)
from beit_build.repository import LABELS_PATH
from beit_preprocessing import (
    DEFAULT_MAX_PIXELS,
    PreprocessingConfig,
    SizeSpec,
    exact_normalization_steps,
    normalize,
    preprocess_bytes,
    preprocess_image,
)
from beit_repository import model_config
from beit_repository.names import CLASSIFY_MODEL, PREPROCESS_MODEL

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "timm"
GOLDEN = json.loads((FIXTURE / "golden.json").read_text())
MODELS = sorted(GOLDEN["models"])
BASE_1K = "beit_base_patch16_224.in22k_ft_in22k_in1k"
LARGE_384 = "beit_large_patch16_384.in22k_ft_in22k_in1k"
V2_22K = "beitv2_base_patch16_224.in1k_ft_in22k"
PIXEL_TOLERANCE = 1e-6
PROBABILITY_TOLERANCE = 1e-4


def unpack(tag: str, directory: Path) -> Path:
    """The fixture's hub folder as timm's writer left it: config.json and the decompressed weights."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in (FIXTURE / tag).iterdir():
        if path.suffix == ".xz":
            (directory / path.stem).write_bytes(lzma.decompress(path.read_bytes()))
        elif path.name == "config.json":
            shutil.copy(path, directory / path.name)
    return directory


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("timm")
    return {tag: unpack(tag, root / tag) for tag in MODELS}


def expected(tag: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The fixture's images of `tag`, timm's pixels for them and timm's probabilities."""
    arrays = np.load(FIXTURE / tag / "expected.npz")
    return GOLDEN["models"][tag]["images"], arrays["pixels"], arrays["probabilities"]


def image_bytes(name: str) -> bytes:
    return (FIXTURE / "images" / name).read_bytes()


def top5(probabilities: np.ndarray) -> list[list[int]]:
    return np.argsort(-probabilities, axis=-1, kind="stable")[:, :5].tolist()


def probabilities_of(checkpoint_model: Any, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(checkpoint_model(torch.from_numpy(pixels)).logits, -1).numpy()


# 1. conversion


def test_timm_beit_is_the_registry_family_of_timm_beit_configs_only() -> None:
    timm_family = family_of({"architecture": "beit_base_patch16_224", "model_type": "timm_wrapper"})
    assert timm_family is not None and timm_family in FAMILIES and timm_family.name == "timm-beit"
    assert {family_of({"architecture": name}) for name in ARCHITECTURES} == {timm_family}
    for other in ("vit_base_patch16_224", "beit3_base_patch16_224", "eva02_base_patch14_224"):
        assert family_of({"architecture": other, "model_type": "timm_wrapper"}) is None
    assert family_of({"model_type": "beit"}) is not timm_family


@pytest.mark.parametrize("tag", MODELS)
def test_every_fixture_variant_converts_and_reproduces_timms_forward(
    tag: str, folders: dict[str, Path]
) -> None:
    checkpoint = load_checkpoint(folders[tag])
    assert checkpoint.family.name == "timm-beit"
    _, pixels, timm_probabilities = expected(tag)
    probabilities = probabilities_of(checkpoint.model, pixels)
    assert np.abs(probabilities - timm_probabilities).max() <= PROBABILITY_TOLERANCE
    assert top5(probabilities) == top5(timm_probabilities)


def test_dims_are_read_off_the_weights_when_config_json_has_no_model_args(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """The Hub's timm configs (written by older timm) name the architecture but give no dims."""
    published = shutil.copytree(folders[LARGE_384], tmp_path / "published")
    config = json.loads((published / "config.json").read_text())
    model_args = config.pop("model_args")
    (published / "config.json").write_text(json.dumps(config))
    checkpoint = load_checkpoint(published)
    beit_config = checkpoint.model.config
    assert (
        beit_config.hidden_size,
        beit_config.num_hidden_layers,
        beit_config.num_attention_heads,
        beit_config.patch_size,
        beit_config.image_size,
        beit_config.intermediate_size,
        beit_config.num_labels,
        beit_config.layer_norm_eps,
    ) == (
        model_args["embed_dim"],
        model_args["depth"],
        model_args["num_heads"],
        model_args["patch_size"],
        model_args["img_size"][0],
        int(model_args["embed_dim"] * model_args["mlp_ratio"]),
        1000,
        1e-6,
    )
    assert checkpoint.resolution == (48, 48) and checkpoint.patch_size == 16
    assert len(checkpoint.family.layer_scales(checkpoint.model)) == 2 * model_args["depth"]
    _, pixels, timm_probabilities = expected(LARGE_384)
    assert (
        np.abs(probabilities_of(checkpoint.model, pixels) - timm_probabilities).max() <= PROBABILITY_TOLERANCE
    )


def test_the_key_table_names_every_weight_timm_saves(folders: dict[str, Path]) -> None:
    state_dict = load_file(folders[BASE_1K] / "model.safetensors")
    table = {timm_key.replace("{i}", "0") for timm_key, _ in KEY_TABLE}
    assert {key.replace("blocks.1.", "blocks.0.") for key in state_dict} == table


def test_a_folder_without_gamma_converts_without_layer_scale(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(folders[V2_22K], tmp_path / "no-layer-scale")
    weights = load_file(folder / "model.safetensors")
    save_file(
        {key: value for key, value in weights.items() if "gamma" not in key}, folder / "model.safetensors"
    )
    checkpoint = load_checkpoint(folder)
    assert checkpoint.family.layer_scales(checkpoint.model) == []
    assert checkpoint.model.config.layer_scale_init_value == 0.0


def test_saved_relative_position_indexes_are_dropped_as_timms_loader_drops_them(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """Older timm saved the index buffers; timm's checkpoint_filter_fn drops them (they follow the window)."""
    folder = shutil.copytree(folders[BASE_1K], tmp_path / "with-index")
    (folder / "pytorch_model.bin").unlink()
    weights = load_file(folder / "model.safetensors")
    weights.update(
        {f"blocks.{i}.attn.relative_position_index": torch.zeros(17, 17, dtype=torch.long) for i in (0, 1)}
    )
    save_file(weights, folder / "model.safetensors")
    _, pixels, timm_probabilities = expected(BASE_1K)
    probabilities = probabilities_of(load_checkpoint(folder).model, pixels)
    assert np.abs(probabilities - timm_probabilities).max() <= PROBABILITY_TOLERANCE


Edit = Callable[[dict[str, Any], dict[str, torch.Tensor]], None]


def _set(mapping: dict[str, Any], key: str, value: Any) -> None:
    mapping[key] = value


REFUSALS: dict[str, tuple[Edit, type[Exception], str]] = {
    "absolute position embeddings": (
        lambda config, weights: _set(weights, "pos_embed", torch.zeros(1, 17, 8)),
        UnsupportedCheckpointError,
        "absolute position embeddings",
    ),
    "shared relative position bias": (
        lambda config, weights: _set(
            weights, "rel_pos_bias.relative_position_bias_table", torch.zeros(52, 2)
        ),
        UnsupportedCheckpointError,
        "shared by all blocks",
    ),
    "token pooling": (
        lambda config, weights: weights.update(
            {"norm.weight": weights.pop("fc_norm.weight"), "norm.bias": weights.pop("fc_norm.bias")}
        ),
        UnsupportedCheckpointError,
        "norm before pooling",
    ),
    "unknown weight": (
        lambda config, weights: _set(weights, "blocks.1.attn.extra_scale", torch.ones(8)),
        UnsupportedCheckpointError,
        "blocks.1.attn.extra_scale",
    ),
    "no qkv bias": (
        lambda config, weights: [
            weights.pop(f"blocks.{i}.attn.{b}") for i in (0, 1) for b in ("q_bias", "v_bias")
        ],
        UnsupportedCheckpointError,
        "q_proj.bias",
    ),
    "no head": (
        lambda config, weights: [weights.pop("head.weight"), weights.pop("head.bias")],
        UnsupportedCheckpointError,
        "head.weight",
    ),
    "layer scale in one block only": (
        lambda config, weights: [weights.pop("blocks.1.gamma_1"), weights.pop("blocks.1.gamma_2")],
        UnsupportedCheckpointError,
        "layer scale in 1 of 2 blocks",
    ),
    "model_args shared bias": (
        lambda config, weights: _set(config["model_args"], "use_shared_rel_pos_bias", True),
        UnsupportedCheckpointError,
        "use_shared_rel_pos_bias",
    ),
    "model_args disagreeing dims": (
        lambda config, weights: _set(config["model_args"], "embed_dim", 768),
        UnsupportedCheckpointError,
        "embed_dim=768 disagrees",
    ),
    "unknown model_args": (
        lambda config, weights: _set(config["model_args"], "rope", True),
        UnsupportedCheckpointError,
        "unknown model_args rope",
    ),
    "input size of other weights": (
        lambda config, weights: _set(config["pretrained_cfg"], "input_size", [3, 224, 224]),
        PreprocessingError,
        "relative position bias is for 32x32",
    ),
    "border crop": (
        lambda config, weights: _set(config["pretrained_cfg"], "crop_mode", "border"),
        PreprocessingError,
        "crop_mode 'border'",
    ),
    "random interpolation": (
        lambda config, weights: _set(config["pretrained_cfg"], "interpolation", "random"),
        PreprocessingError,
        "interpolation 'random'",
    ),
    "class count disagreeing with the head": (
        lambda config, weights: _set(config, "num_classes", 21841),
        UnsupportedCheckpointError,
        "21841 classes, the head has 1000",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_layouts_beit_build_cannot_convert_are_refused_saying_what_was_found(
    case: str, folders: dict[str, Path], tmp_path: Path
) -> None:
    edit, error, message = REFUSALS[case]
    folder = tmp_path / "edited"
    folder.mkdir()
    config = json.loads((folders[BASE_1K] / "config.json").read_text())
    weights = load_file(folders[BASE_1K] / "model.safetensors")
    edit(config, weights)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(error, match=message):
        load_checkpoint(folder)


@pytest.mark.parametrize("architecture", ["vit_base_patch16_224", "beit3_base_patch16_224"])
def test_timm_checkpoints_of_other_architectures_are_refused_naming_them(
    architecture: str, tmp_path: Path
) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"architecture": architecture, "num_classes": 1000, "pretrained_cfg": {}})
    )
    with pytest.raises(UnsupportedCheckpointError, match=f"timm checkpoint \\({architecture}\\).*timm-beit"):
        load_checkpoint(tmp_path)


def hub_cache(root: Path, repo_id: str, folder: Path) -> Path:
    """The hub cache as downloading `repo_id` leaves it (huggingface_hub's layout), with `folder`'s files."""
    revision = "0" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    shutil.copytree(folder, repo / "snapshots" / revision)
    return root


def test_beit_build_takes_a_timm_hub_id_through_the_hub_cache(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """Offline, huggingface_hub answers from its cache what a download put there: config.json and, as the 384
    fixture has no safetensors, pytorch_model.bin."""
    repo_id = f"timm/{LARGE_384}"
    cache = hub_cache(tmp_path / "cache", repo_id, folders[LARGE_384])
    environment = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    repository = tmp_path / "repository"
    beit_build = Path(sys.executable).parent / "beit-build"
    subprocess.run(
        [beit_build, "--model", repo_id, "--repository", repository], env=environment, check=True, timeout=300
    )
    parameters = model_config.parameters(model_config.read(repository / PREPROCESS_MODEL / "config.pbtxt"))
    assert json.loads(parameters["checkpoint"]) == repo_id
    assert json.loads(parameters["pipeline"]) == "torchvision"
    assert (repository / LABELS_PATH).read_text().splitlines() == imagenet1k_labels()
    missing = subprocess.run(
        [beit_build, "--model", "timm/beit_base_patch16_224.not_downloaded", "--repository", repository],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode != 0
    assert "cannot download timm/beit_base_patch16_224.not_downloaded" in missing.stderr
    assert "RANDOM=tiny" in missing.stderr


# 2. preprocessing


RECIPES = sorted(GOLDEN["transforms"])


@pytest.mark.parametrize("recipe", RECIPES)
def test_timms_eval_transform_is_reproduced_bit_for_bit_through_the_parameters(recipe: str) -> None:
    """Every pretrained timm BEiT tag's pretrained_cfg at full size (224 crop_pct 0.9, 0.95, 384 and 512 at
    1.0), plus padding, squash and resolve_data_config's defaults, on JPEGs and PNGs of several modes."""
    golden = GOLDEN["transforms"][recipe]
    config = PreprocessingConfig.from_parameters(timm_preprocessing(golden["pretrained_cfg"]).to_parameters())
    assert exact_normalization_steps(config), "the graph would normalize with the slow lookup"
    for name, output in golden["outputs"].items():
        pixels = normalize(preprocess_bytes(image_bytes(name), config, max_pixels=DEFAULT_MAX_PIXELS), config)
        assert list(pixels.shape) == output["shape"]
        assert hashlib.sha256(pixels.tobytes()).hexdigest() == output["sha256"], f"{recipe}, {name}"


def test_transformers_arithmetic_would_miss_timms_pixels_on_these_images() -> None:
    """The recipes exercise where torchvision's center crop parts from transformers' (half-even rounding of
    the offset; padding after the image): with the transformers pipeline many outputs differ."""
    differing = 0
    for golden in GOLDEN["transforms"].values():
        config = replace(timm_preprocessing(golden["pretrained_cfg"]), pipeline="transformers")
        for name, output in golden["outputs"].items():
            pixels = normalize(
                preprocess_bytes(image_bytes(name), config, max_pixels=DEFAULT_MAX_PIXELS), config
            )
            differing += hashlib.sha256(pixels.tobytes()).hexdigest() != output["sha256"]
    assert differing >= 20


def test_timm_recipe_for_crop_pct_0_9_resizes_the_short_side_to_248_and_crops_224() -> None:
    config = timm_preprocessing(GOLDEN["transforms"][f"{BASE_1K}"]["pretrained_cfg"])
    assert config.size == SizeSpec(shortest_edge=248) and config.crop_size == SizeSpec(height=224, width=224)
    assert (config.resample, config.pipeline, config.image_mean) == (3, "torchvision", (0.5, 0.5, 0.5))
    assert json.loads(config.to_parameters()["pipeline"]) == "torchvision"


@pytest.mark.parametrize(
    "width,crop,torchvision_row,transformers_row",
    [
        # offset 1.5: torchvision rounds half to even (2), transformers floors (1)
        (35, 32, list(range(12, 44)), list(range(11, 43))),
        # offset 2.5: half to even is 2, as the floor is
        (37, 32, list(range(12, 44)), list(range(12, 44))),
        # padding 3: torchvision puts 1 column before the image, transformers 2
        (3, 6, [0, 10, 11, 12, 0, 0], [0, 0, 10, 11, 12, 0]),
    ],
)
def test_center_crop_offsets_and_padding_follow_each_pipeline(
    width: int, crop: int, torchvision_row: list[int], transformers_row: list[int]
) -> None:
    from PIL import Image

    # Each column's value is its index plus 10; rows are alike.
    row = np.arange(10, 10 + width, dtype=np.uint8)
    image = Image.fromarray(np.repeat(np.repeat(row[None, :, None], 3, axis=2), crop, axis=0))
    for pipeline, expected_row in (("torchvision", torchvision_row), ("transformers", transformers_row)):
        config = PreprocessingConfig(
            do_resize=False,
            do_center_crop=True,
            crop_size=SizeSpec(height=crop, width=crop),
            pipeline=pipeline,  # type: ignore[arg-type]
        )
        cropped = preprocess_image(image, config)
        assert cropped[0, 0].tolist() == expected_row, pipeline


def test_parameters_of_repositories_built_before_the_pipeline_key_read_as_transformers() -> None:
    parameters = PreprocessingConfig().to_parameters()
    del parameters["pipeline"]
    assert PreprocessingConfig.from_parameters(parameters).pipeline == "transformers"


@pytest.mark.parametrize(
    "factory",
    [
        lambda: PreprocessingConfig(pipeline="opencv"),  # type: ignore[arg-type]
        lambda: PreprocessingConfig(pipeline="torchvision", rescale_factor=1 / 127.5),
        lambda: PreprocessingConfig.from_parameters(
            {**PreprocessingConfig().to_parameters(), "pipeline": '"pil"'}
        ),
    ],
    ids=["unknown-pipeline", "torchvision-rescales-by-1/255-only", "unknown-pipeline-parameter"],
)
def test_pipelines_other_than_transformers_and_torchvision_are_refused(
    factory: Callable[[], PreprocessingConfig],
) -> None:
    with pytest.raises(ValueError, match="pipeline"):
        factory()


# 3. labels


def test_shipped_imagenet_lists_are_timms_imagenet_info_descriptions() -> None:
    for path, subset in ((IMAGENET1K_LABELS_PATH, "imagenet-1k"), (IMAGENET22K_LABELS_PATH, "imagenet-22k")):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == GOLDEN["imagenet_labels"][subset], path
    labels = imagenet1k_labels()
    assert (len(labels), labels[0], labels[281], labels[999]) == (
        1000,
        "tench, Tinca tinca",
        "tabby, tabby cat",
        "toilet tissue, toilet paper, bathroom tissue",
    )
    provenance = (IMAGENET1K_LABELS_PATH.parent / "PROVENANCE.md").read_text()
    assert "imagenet1k_labels.txt" in provenance and "imagenet22k_labels.txt" in provenance
    assert "timm-1.0.31-py3-none-any.whl" in provenance


def test_1k_and_22k_timm_heads_get_the_imagenet_lists_others_their_label_names(
    folders: dict[str, Path],
) -> None:
    assert list(load_checkpoint(folders[BASE_1K]).labels) == imagenet1k_labels()
    assert list(load_checkpoint(folders[V2_22K]).labels) == imagenet22k_labels()
    named = {"label_names": ["n1", "n2", "n3"], "label_descriptions": {"n1": "one", "n3": "three\nlines"}}
    assert timm_labels(3, named) == ["one", "n2", "three lines"]
    assert timm_labels(2, {"label_names": {"1": "b", "0": "a"}}) == ["a", "b"]
    assert timm_labels(2, {}) == ["LABEL_0", "LABEL_1"]


# 4. built and served against timm


@pytest.fixture(scope="module")
def repositories(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    built = {}
    for tag in MODELS:
        built[tag] = tmp_path_factory.mktemp(f"repository-{tag}")
        build_repository(folders[tag], built[tag])
    return built


def test_check_engine_reloads_a_timm_checkpoint_by_its_recorded_folder(repositories: dict[str, Path]) -> None:
    result = check_engine(repositories[BASE_1K], engine="onnx", batch_size=3)
    assert (result.top1_agreement, result.top5_agreement) == (1.0, 1.0)
    assert result.max_abs_probability_diff < 1e-5


def infer(server: Any, model: str, output: str, images: list[bytes], class_count: int = 0) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))
    batch = np.array([[data] for data in images], dtype=np.object_)
    image_input = grpcclient.InferInput("IMAGE", list(batch.shape), "BYTES")
    image_input.set_data_from_numpy(batch)
    requested = grpcclient.InferRequestedOutput(output, class_count=class_count)
    return client.infer(model, [image_input], outputs=[requested]).as_numpy(output)


@pytest.mark.server
@pytest.mark.parametrize("tag", MODELS)
def test_the_served_timm_checkpoint_computes_what_timm_computes(
    tag: str, repositories: dict[str, Path]
) -> None:
    """Converted, built, served: the preprocessor's pixels within 1e-6 of timm's eval transform, the
    ensemble's probabilities within 1e-4 of timm's forward, the same top-5 (server-side and through the
    SDK's client-side preprocessing), labelled from the shipped ImageNet lists."""
    from beit_client import BeitClient
    from beit_serve import EmbeddedServer
    from tests.conftest import free_port

    names, timm_pixels, timm_probabilities = expected(tag)
    images = [image_bytes(name) for name in names]
    labels = (repositories[tag] / LABELS_PATH).read_text().splitlines()
    server = EmbeddedServer(
        repositories[tag], http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
    )
    with server:
        pixels = infer(server, PREPROCESS_MODEL, "PIXEL_VALUES", images)
        probabilities = infer(server, CLASSIFY_MODEL, "PROBABILITIES", images)
        served_top5 = infer(server, CLASSIFY_MODEL, "PROBABILITIES", images, class_count=5)
        with BeitClient(server.grpc_url, preprocess="client") as client:
            client_side = client.classify([FIXTURE / "images" / name for name in names], top_k=5)
            preprocessing = client.model_info().preprocessing
            assert preprocessing.pipeline == "torchvision"
    assert pixels.dtype == np.uint8
    assert np.abs(normalize(pixels, preprocessing) - timm_pixels).max() <= PIXEL_TOLERANCE
    assert np.abs(probabilities - timm_probabilities).max() <= PROBABILITY_TOLERANCE
    expected_top5 = top5(timm_probabilities)
    assert top5(probabilities) == expected_top5
    for row, sdk_row, indices in zip(served_top5, client_side, expected_top5, strict=True):
        entries = [entry.decode().split(":", 2) for entry in row]
        assert [int(index) for _, index, _ in entries] == indices
        assert [label for _, _, label in entries] == [labels[i] for i in indices]
        assert [prediction.index for prediction in sdk_row] == indices
        assert [prediction.label for prediction in sdk_row] == [labels[i] for i in indices]
    expected_labels = imagenet22k_labels() if tag == V2_22K else imagenet1k_labels()
    assert labels == expected_labels
