"""Encoded images for load tests: a seeded, photo-like JPEG corpus, or the files of a folder.

Load against an image server has to carry real encoded files: decode cost grows with pixel count and JPEG
entropy, so a fixed tiny image (or one repeated payload) makes the preprocessor look far cheaper than it is.
The synthetic images mix smooth gradients, hard-edged shapes and sensor-like noise, which gives JPEG sizes
and decode times close to camera photos of the same resolution.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PHOTO_SIZE = (640, 480)
# (width, height, share of the corpus). Mostly VGA photos, with thumbnails, portrait phone shots and HD
# frames around them, so the batcher sees the spread of sizes a real client sends.
SIZE_MIX: tuple[tuple[int, int, float], ...] = (
    (640, 480, 0.5),
    (320, 240, 0.1),
    (480, 640, 0.1),
    (800, 600, 0.1),
    (1024, 768, 0.1),
    (1280, 720, 0.05),
    (1920, 1080, 0.05),
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def photo_like_jpeg(rng: np.random.Generator, width: int, height: int) -> bytes:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height + 1) / 2
    low, high = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    pixels = low + ramp[..., None] * (high - low)
    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        x0, x1 = sorted(rng.integers(0, width, size=2).tolist())
        y0, y1 = sorted(rng.integers(0, height, size=2).tolist())
        fill = tuple(rng.integers(0, 256, size=3).tolist())
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=fill)

    # Noise is what keeps JPEG from compressing flat areas to nothing, as sensor noise does in photos.
    sigma = np.float32(rng.uniform(4, 12))
    noisy = (
        np.asarray(image, dtype=np.float32)
        + rng.standard_normal((height, width, 3), dtype=np.float32) * sigma
    )
    image = Image.fromarray(noisy.clip(0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(80, 96)))
    return buffer.getvalue()


def synthetic_corpus(
    count: int = 64, *, seed: int = 0, sizes: Sequence[tuple[int, int, float]] = SIZE_MIX
) -> list[bytes]:
    """`count` JPEGs whose sizes follow `sizes`' shares; the same seed gives the same bytes."""
    rng = np.random.default_rng(seed)
    shares = np.array([share for _, _, share in sizes], dtype=np.float64)
    counts = np.floor(shares / shares.sum() * count).astype(int)
    # Rounding leftovers go to the most common sizes, so small corpora still hold the main size.
    for index in np.argsort(-shares)[: count - counts.sum()]:
        counts[index] += 1
    images = [
        photo_like_jpeg(rng, width, height)
        for (width, height, _), n in zip(sizes, counts, strict=True)
        for _ in range(n)
    ]
    # Interleave sizes so any prefix, or any user's slice of the corpus, has the mix too.
    order = np.random.default_rng(seed + 1).permutation(len(images))
    return [images[i] for i in order]


def photo_corpus(count: int = 32, *, seed: int = 0) -> list[bytes]:
    """`count` JPEGs of exactly PHOTO_SIZE: the fixed workload for per-image preprocessing costs."""
    width, height = PHOTO_SIZE
    return synthetic_corpus(count, seed=seed, sizes=((width, height, 1.0),))


def folder_corpus(directory: Path | str) -> list[bytes]:
    """Every image file under `directory`, in path order. Files are sent as they are, never re-encoded."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"{root} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [p.read_bytes() for p in paths]


def load_corpus(directory: Path | str | None = None, *, count: int = 64, seed: int = 0) -> list[bytes]:
    return folder_corpus(directory) if directory else synthetic_corpus(count, seed=seed)
