"""The standard ImageNet class lists, so that names in WordNet ids (ImageNet's val folders: `n01440764/`) map
to the output index of a head serving one of them.

Shipped as package data in `data/`: line i of `imagenet1k_synsets.tsv` (1,000) and `imagenet22k_synsets.tsv`
(fall11, 21,841) is the WordNet id of output index i, a tab, and its lemma, the label beit-build serves for
that index. Both are generated from timm's package data by `python -m beit_build.scripts.imagenet_labels`,
which records their sources in `data/PROVENANCE.md`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IMAGENET_1K", "IMAGENET_22K", "STANDARD_LISTS", "ClassList", "standard_list"]

DATA_DIRECTORY = Path(__file__).resolve().parent / "data"

MIN_AGREEMENT = 0.99
"""A head serves a standard list when it has as many outputs and at least this share of its labels are the
list's lemmas. Not all: a Hub checkpoint's `id2label` (microsoft/beit-base-patch16-224) may spell a few
class names differently from timm's lemmas, while its outputs are still in sorted-WordNet-id order."""


@dataclass(frozen=True)
class ClassList:
    name: str
    path: Path
    num_labels: int

    def read(self) -> tuple[list[str], list[str]]:
        """The WordNet ids and the lemmas, by output index."""
        return _read(self.path, self.num_labels)


IMAGENET_1K = ClassList("imagenet-1k", DATA_DIRECTORY / "imagenet1k_synsets.tsv", 1_000)
IMAGENET_22K = ClassList("imagenet-22k", DATA_DIRECTORY / "imagenet22k_synsets.tsv", 21_841)
STANDARD_LISTS = (IMAGENET_1K, IMAGENET_22K)


@functools.cache
def _read(path: Path, num_labels: int) -> tuple[list[str], list[str]]:
    rows = [line.split("\t", 1) for line in path.read_text(encoding="utf-8").splitlines()]
    if len(rows) != num_labels or any(len(row) != 2 for row in rows):
        raise ValueError(f"{path} is not {num_labels} lines of WordNet id, tab, lemma")
    return [row[0] for row in rows], [row[1] for row in rows]


def standard_list(labels: Sequence[str]) -> tuple[ClassList, list[str]] | None:
    """The standard list `labels` (a head's served labels, by output index) is, with its WordNet ids; None
    when it is none of them."""
    for candidate in STANDARD_LISTS:
        if len(labels) != candidate.num_labels:
            continue
        wnids, lemmas = candidate.read()
        agreeing = sum(_same(served, lemma) for served, lemma in zip(labels, lemmas, strict=True))
        if agreeing >= MIN_AGREEMENT * candidate.num_labels:
            return candidate, wnids
    return None


def _same(served: str, lemma: str) -> bool:
    return " ".join(served.split()).casefold() == " ".join(lemma.split()).casefold()
