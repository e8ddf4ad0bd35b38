"""Class names shipped with beit-build, and labels files: one name per line, one line per output index, as
Triton's label_filename expects.

The shipped ImageNet lists are what timm's `ImageNetInfo(subset).label_descriptions()` gives: the lemmas of
the sorted WordNet ids of ImageNet-1k (1,000) and of fall11 ImageNet-22k (21,841), generated from timm's
package data by `python -m beit_build.scripts.imagenet_labels`; data/PROVENANCE.md records the source.
"""

from __future__ import annotations

from pathlib import Path

from beit_build.errors import LabelsError

DATA_DIRECTORY = Path(__file__).resolve().parent / "data"
IMAGENET1K_NUM_LABELS = 1_000
IMAGENET1K_LABELS_PATH = DATA_DIRECTORY / "imagenet1k_labels.txt"
IMAGENET22K_NUM_LABELS = 21_841
IMAGENET22K_LABELS_PATH = DATA_DIRECTORY / "imagenet22k_labels.txt"


def imagenet1k_labels() -> list[str]:
    return read_labels(IMAGENET1K_LABELS_PATH, expected=IMAGENET1K_NUM_LABELS)


def imagenet22k_labels() -> list[str]:
    return read_labels(IMAGENET22K_LABELS_PATH, expected=IMAGENET22K_NUM_LABELS)


def read_labels(path: Path, *, expected: int | None = None) -> list[str]:
    labels = path.read_text(encoding="utf-8").splitlines()
    if expected is not None and len(labels) != expected:
        raise LabelsError(f"{path} has {len(labels)} labels, the checkpoint's head has {expected}")
    return labels


def one_line(label: str) -> str:
    """A label as one line of a labels file."""
    return " ".join(label.split())
