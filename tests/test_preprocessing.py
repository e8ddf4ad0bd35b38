"""beit_preprocessing against transformers' BeitImageProcessorPil, the reference it must match bit for bit."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from transformers import BeitImageProcessorPil
from transformers.image_utils import load_image

from beit_preprocessing import (
    DEFAULT_MAX_PIXELS,
    EmptyImageError,
    InconsistentSizesError,
    InvalidImageError,
    PreprocessingConfig,
    SizeSpec,
    TooManyPixelsError,
    TruncatedImageError,
    UndecodableImageError,
    decode_image,
    exact_normalization_steps,
    normalize,
    preprocess_batch,
    preprocess_bytes,
    preprocess_image,
    preprocess_requests,
)
from tests.images import png_declaring

MAX_PIXELS = DEFAULT_MAX_PIXELS
IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])

# The processor settings of the checkpoints we serve (their preprocessor_config.json on the Hub), plus timm's
# crop_pct 0.9 recipe.
PROCESSORS = {
    "224-bilinear-half": dict(
        size={"height": 224, "width": 224}, resample=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ),
    "224-bicubic-defaults": dict(),
    "shortest-248-crop-224-bicubic-imagenet": dict(
        size={"shortest_edge": 248},
        resample=3,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        **IMAGENET,
    ),
    "no-resize-crop-224-imagenet": dict(do_resize=False, do_center_crop=True, **IMAGENET),
}


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Photo-like RGB content: smooth gradients, sensor noise, hard-edged shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x, y = x / max(width, 1), y / max(height, 1)
    channels = [128 + 90 * np.sin(6 * x + 2 * phase) * np.cos(4 * y - phase) for phase in (0.0, 1.0, 2.0)]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(1, width // 3 + 2)), y0 + int(rng.integers(1, height // 3 + 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def reference(data: bytes, processor: BeitImageProcessorPil) -> np.ndarray:
    """What a transformers user gets: load_image (EXIF transpose + RGB), then the PIL image processor."""
    pixels = processor(load_image(Image.open(io.BytesIO(data))))["pixel_values"][0]
    return np.asarray(pixels, dtype=np.float32)


def assert_matches_transformers(data: bytes, processor_kwargs: dict[str, object]) -> None:
    processor = BeitImageProcessorPil(**processor_kwargs)
    config = PreprocessingConfig.from_image_processor_dict(processor.to_dict())
    pixels = preprocess_image(decode_image(data, max_pixels=MAX_PIXELS), config)
    assert pixels.dtype == np.uint8
    ours = normalize(pixels, config)
    expected = reference(data, processor)
    assert ours.dtype == np.float32 and ours.shape == expected.shape
    assert np.array_equal(ours, expected), f"max |diff| {np.abs(ours - expected).max()}"
    assert np.array_equal(preprocess_bytes(data, config, max_pixels=MAX_PIXELS), pixels)


@pytest.mark.parametrize("name", PROCESSORS)
def test_the_served_checkpoints_normalize_in_the_graph_with_exact_float32_steps(name: str) -> None:
    """Not the slow lookup fallback (beit_build.export.PixelNormalization)."""
    processor = BeitImageProcessorPil(**PROCESSORS[name])
    assert exact_normalization_steps(PreprocessingConfig.from_image_processor_dict(processor.to_dict()))


@pytest.mark.parametrize("name", PROCESSORS)
@pytest.mark.parametrize(
    "fmt,options",
    [
        ("JPEG", {"quality": 90}),
        ("PNG", {}),
        ("WEBP", {"quality": 80}),
        ("BMP", {}),
        ("GIF", {}),
        ("TIFF", {}),
    ],
    ids=["jpeg", "png", "webp", "bmp", "gif", "tiff"],
)
def test_every_format_matches_transformers_bit_for_bit(
    name: str, fmt: str, options: dict[str, object]
) -> None:
    assert_matches_transformers(encode(photo(173, 131), fmt, **options), PROCESSORS[name])


def _with_mode(mode: str) -> Image.Image:
    base = photo(97, 61, seed=3)
    if mode == "I;16":
        return Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    if mode in ("LA", "PA", "RGBA"):
        alpha = Image.linear_gradient("L").resize(base.size)
        converted = base.convert(mode[:-1] if mode != "RGBA" else "RGB")
        converted.putalpha(alpha)
        return converted
    return base.convert(mode)


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("P", "GIF"),
        ("RGBA", "PNG"),
        ("RGBA", "WEBP"),
        ("CMYK", "JPEG"),
        ("CMYK", "TIFF"),
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("1", "PNG"),
        ("1", "BMP"),
        ("L", "JPEG"),
    ],
)
def test_every_pixel_mode_converts_to_rgb_like_transformers(mode: str, fmt: str) -> None:
    data = encode(_with_mode(mode), fmt)
    for name in ("224-bilinear-half", "shortest-248-crop-224-bicubic-imagenet"):
        assert_matches_transformers(data, PROCESSORS[name])


def test_palette_png_with_transparency_matches_transformers() -> None:
    image = photo(64, 48).convert("P")
    assert_matches_transformers(encode(image, "PNG", transparency=0), PROCESSORS["224-bilinear-half"])


@pytest.mark.parametrize("size", [(1, 1), (7, 3), (3, 7), (225, 224), (1000, 50), (50, 600), (640, 480)])
def test_odd_tiny_portrait_and_panorama_sizes_match_transformers(size: tuple[int, int]) -> None:
    data = encode(photo(*size, seed=size[0]), "PNG")
    for name in PROCESSORS:
        assert_matches_transformers(data, PROCESSORS[name])


def test_shortest_edge_with_longest_edge_matches_transformers() -> None:
    kwargs = dict(size={"shortest_edge": 224, "longest_edge": 300}, do_center_crop=True)
    for size in [(1000, 50), (300, 400), (224, 224)]:
        assert_matches_transformers(encode(photo(*size), "PNG"), kwargs)


def _with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=90, exif=exif.tobytes())


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_load_image(orientation: int) -> None:
    data = _with_orientation(photo(120, 70), orientation)
    swapped = orientation >= 5
    assert decode_image(data, max_pixels=MAX_PIXELS).size == ((70, 120) if swapped else (120, 70))
    assert_matches_transformers(data, PROCESSORS["shortest-248-crop-224-bicubic-imagenet"])
    assert_matches_transformers(data, PROCESSORS["224-bilinear-half"])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_mode_stays_close_to_exact_in_every_orientation(orientation: int) -> None:
    data = _with_orientation(photo(1003, 701, seed=orientation), orientation)
    exact = PreprocessingConfig(
        size=SizeSpec(shortest_edge=248), do_center_crop=True, crop_size=SizeSpec(height=224, width=224)
    )
    reference_pixels = normalize(preprocess_bytes(data, exact, max_pixels=MAX_PIXELS), exact)
    fast_pixels = normalize(preprocess_bytes(data, replace(exact, mode="fast"), max_pixels=MAX_PIXELS), exact)
    assert fast_pixels.shape == reference_pixels.shape
    # Measured 0.0038-0.0043 here; a resize box not moved with the EXIF transpose (a sub-pixel shift of
    # the whole image) gives 0.0056-0.0092.
    assert np.abs(fast_pixels - reference_pixels).mean() < 0.005


def test_fast_mode_is_identical_to_exact_for_formats_without_dct_scaling() -> None:
    data = encode(photo(640, 480), "PNG")
    exact = PreprocessingConfig(resample=2)
    fast = PreprocessingConfig(resample=2, mode="fast")
    assert np.array_equal(
        preprocess_bytes(data, fast, max_pixels=MAX_PIXELS),
        preprocess_bytes(data, exact, max_pixels=MAX_PIXELS),
    )


def _truncated(fmt: str) -> bytes:
    data = encode(photo(300, 200), fmt)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "data,error",
    [
        (b"", EmptyImageError),
        (np.random.default_rng(0).bytes(5000), UndecodableImageError),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", UndecodableImageError),
        (_truncated("JPEG"), TruncatedImageError),
        (_truncated("PNG"), TruncatedImageError),
        (encode(Image.new("L", (5000, 5000)), "PNG"), TooManyPixelsError),
    ],
    ids=["empty", "random-bytes", "eps", "truncated-jpeg", "truncated-png", "too-many-pixels"],
)
def test_bad_input_raises_invalid_image_error(data: bytes, error: type[InvalidImageError]) -> None:
    with pytest.raises(error) as raised:
        decode_image(data, max_pixels=10_000_000)
    assert isinstance(raised.value, ValueError) and str(raised.value)


def test_undecodable_bytes_are_named_without_pillows_buffer_repr() -> None:
    with pytest.raises(UndecodableImageError) as raised:
        decode_image(b"not an image at all", max_pixels=MAX_PIXELS)
    assert str(raised.value) == "not an image in a supported format (JPEG, PNG, WEBP, BMP, GIF, TIFF)"


def test_a_request_of_one_image_fails_with_its_reason_alone() -> None:
    [answer] = preprocess_requests([_request(b"garbage")], PreprocessingConfig(), max_pixels=MAX_PIXELS)
    assert isinstance(answer, UndecodableImageError) and str(answer).startswith("not an image")


def test_pixel_limit_is_checked_from_the_header_before_decoding() -> None:
    # Decoding 100000x100000 pixels would need 10 GB.
    bomb = png_declaring(100_000, 100_000)
    with pytest.raises(TooManyPixelsError, match="pixels"):
        decode_image(bomb, max_pixels=MAX_PIXELS)


def test_batch_returns_errors_in_place_and_results_for_the_rest() -> None:
    config = PreprocessingConfig()
    good = encode(photo(64, 48), "JPEG")
    items = [good, b"", good, b"not an image", _truncated("JPEG")]
    with ThreadPoolExecutor(2) as executor:
        results = preprocess_batch(items, config, max_pixels=MAX_PIXELS, executor=executor)
    assert [type(r).__name__ for r in results] == [
        "ndarray",
        "EmptyImageError",
        "ndarray",
        "UndecodableImageError",
        "TruncatedImageError",
    ]
    assert np.array_equal(results[0], results[2])


def _request(*images: bytes) -> np.ndarray:
    array = np.empty((len(images), 1), dtype=np.object_)
    for index, data in enumerate(images):
        array[index, 0] = data
    return array


def test_requests_are_gathered_and_a_bad_image_fails_only_its_own_request() -> None:
    config = PreprocessingConfig()
    first, second = encode(photo(64, 48, 1), "JPEG"), encode(photo(80, 60, 2), "PNG")
    requests = [_request(first, second), _request(second, b"garbage"), _request(first)]
    with ThreadPoolExecutor(2) as executor:
        answers = preprocess_requests(requests, config, max_pixels=MAX_PIXELS, executor=executor)
    assert isinstance(answers[0], np.ndarray) and answers[0].shape == (2, 3, 224, 224)
    assert isinstance(answers[1], UndecodableImageError) and "image 1 of the request" in str(answers[1])
    assert isinstance(answers[2], np.ndarray) and np.array_equal(answers[2][0], answers[0][0])


def test_pixels_are_written_into_a_given_output_array_of_their_shape() -> None:
    # How beit_preprocess fills each request's output tensor without a stacking copy.
    config = PreprocessingConfig()
    data = encode(photo(64, 48), "JPEG")
    out = np.zeros((3, 224, 224), dtype=np.uint8)
    assert preprocess_bytes(data, config, max_pixels=MAX_PIXELS, out=out) is out
    assert np.array_equal(out, preprocess_bytes(data, config, max_pixels=MAX_PIXELS))
    with pytest.raises(ValueError, match=r"out must be uint8 \[3, 224, 224\]"):
        preprocess_bytes(data, config, max_pixels=MAX_PIXELS, out=np.zeros((3, 224, 225), dtype=np.uint8))


def test_images_of_one_request_with_different_output_sizes_fail_that_request() -> None:
    config = PreprocessingConfig(size=SizeSpec(shortest_edge=32))
    answers = preprocess_requests(
        [_request(encode(photo(64, 48), "PNG"), encode(photo(48, 64), "PNG"))], config, max_pixels=MAX_PIXELS
    )
    assert isinstance(answers[0], InconsistentSizesError)


def test_parameters_round_trip() -> None:
    config = PreprocessingConfig(
        size=SizeSpec(shortest_edge=248),
        resample=3,
        do_center_crop=True,
        crop_size=SizeSpec(height=224, width=224),
        image_mean=(0.485, 0.456, 0.406),
        image_std=(0.229, 0.224, 0.225),
    )
    parameters = config.to_parameters()
    assert json.loads(parameters["size"]) == {"shortest_edge": 248}
    assert PreprocessingConfig.from_parameters(parameters) == config
    assert (
        PreprocessingConfig.from_parameters({**parameters, "mode": "fast", "max_pixels": "1"}).mode == "fast"
    )


def test_missing_parameters_tell_the_user_to_run_beit_build() -> None:
    with pytest.raises(ValueError, match="beit-build"):
        PreprocessingConfig.from_parameters({"max_pixels": "40000000", "mode": "exact"})


def test_tiny_checkpoint_preprocessor_config_is_read(tiny_checkpoint: Path) -> None:
    values = json.loads((tiny_checkpoint / "preprocessor_config.json").read_text())
    config = PreprocessingConfig.from_image_processor_dict(values)
    assert config.size == SizeSpec(height=224, width=224) and config.resample == 2
    assert config.image_mean == (0.5, 0.5, 0.5) and config.output_size == (224, 224)
    assert PreprocessingConfig.from_parameters(config.to_parameters()) == config


def test_legacy_and_missing_keys_take_transformers_defaults() -> None:
    legacy = {"size": 384, "crop_size": 384, "resample": 2, "image_mean": 0.5}
    config = PreprocessingConfig.from_image_processor_dict(legacy)
    processor = BeitImageProcessorPil(**legacy)
    assert config.size == SizeSpec(height=384, width=384)
    assert config == PreprocessingConfig.from_image_processor_dict(processor.to_dict())
    assert PreprocessingConfig.from_image_processor_dict({}) == PreprocessingConfig.from_image_processor_dict(
        BeitImageProcessorPil().to_dict()
    )


ConfigFactory = Callable[[], PreprocessingConfig]


@pytest.mark.parametrize(
    "factory",
    [
        lambda: PreprocessingConfig(mode="slow"),  # type: ignore[arg-type]
        lambda: PreprocessingConfig(do_center_crop=True, crop_size=SizeSpec(shortest_edge=3)),
        lambda: PreprocessingConfig.from_parameters(
            {**PreprocessingConfig().to_parameters(), "mode": "turbo"}
        ),
        lambda: PreprocessingConfig.from_parameters(
            {**PreprocessingConfig().to_parameters(), "size": "{oops"}
        ),
    ],
    ids=["bad-mode", "crop-without-height", "bad-mode-parameter", "bad-json"],
)
def test_invalid_settings_are_refused(factory: ConfigFactory) -> None:
    with pytest.raises(ValueError):
        factory()


@pytest.mark.parametrize("wrap", [lambda b64: b64, lambda b64: b"data:image/png;base64," + b64])
def test_base64_text_from_json_clients_decodes_to_the_same_pixels(wrap: Callable[[bytes], bytes]) -> None:
    data = encode(photo(64, 48), "PNG")
    expected = preprocess_bytes(data, PreprocessingConfig(), max_pixels=MAX_PIXELS)
    uploaded = wrap(base64.encodebytes(data))  # with line breaks, as `base64` the command writes it
    assert np.array_equal(preprocess_bytes(uploaded, PreprocessingConfig(), max_pixels=MAX_PIXELS), expected)


def test_text_that_is_not_base64_of_an_image_is_undecodable() -> None:
    with pytest.raises(UndecodableImageError):
        decode_image(base64.b64encode(b"plain words, not a picture"), max_pixels=MAX_PIXELS)
