"""Regenerate beit_build/data/imagenet22k_labels.txt from timm's package data.

The 22k BEiT heads output the 21,841 fall11 WordNet ids in sorted order; the Hub id2label of those checkpoints
is shifted from id 9205 on (two entries of a 21,843-entry list were deleted without re-indexing; see the
Hub discussion of microsoft/beit-large-patch16-224-pt22k-ft22k), so we ship the list ourselves. timm is never
installed or imported: its wheel is read as a zip (`pip download timm --no-deps -d /tmp/timm`).

    python -m beit_build.scripts.imagenet22k_labels --timm-wheel /tmp/timm/timm-*.whl
    python -m beit_build.scripts.imagenet22k_labels --synsets imagenet22k_synsets.txt \
        --lemmas imagenet_synset_to_lemma.txt
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from beit_build.labels import IMAGENET22K_LABELS_PATH, IMAGENET22K_NUM_LABELS

SYNSETS_MEMBER = "timm/data/_info/imagenet22k_synsets.txt"
LEMMAS_MEMBER = "timm/data/_info/imagenet_synset_to_lemma.txt"


def imagenet22k_lemmas(synsets_text: str, lemmas_text: str) -> list[str]:
    synsets = synsets_text.split()
    if len(synsets) != IMAGENET22K_NUM_LABELS or synsets != sorted(synsets):
        raise ValueError(f"expected {IMAGENET22K_NUM_LABELS} sorted WordNet ids, got {len(synsets)}")
    lemma_of = dict(line.split("\t", 1) for line in lemmas_text.splitlines() if line.strip())
    return [lemma_of[synset].strip() for synset in synsets]


def _read_wheel(wheel: Path) -> tuple[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(SYNSETS_MEMBER).decode(), archive.read(LEMMAS_MEMBER).decode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--timm-wheel", type=Path, help="a downloaded timm wheel (read as a zip)")
    source.add_argument("--synsets", type=Path, help="imagenet22k_synsets.txt (needs --lemmas)")
    parser.add_argument("--lemmas", type=Path, help="imagenet_synset_to_lemma.txt")
    parser.add_argument("--output", type=Path, default=IMAGENET22K_LABELS_PATH)
    args = parser.parse_args(argv)
    if args.timm_wheel is not None:
        synsets_text, lemmas_text = _read_wheel(args.timm_wheel)
    elif args.lemmas is None:
        parser.error("--synsets needs --lemmas")
    else:
        synsets_text, lemmas_text = args.synsets.read_text(), args.lemmas.read_text()
    lemmas = imagenet22k_lemmas(synsets_text, lemmas_text)
    args.output.write_text("\n".join(lemmas) + "\n", encoding="utf-8")
    print(f"wrote {len(lemmas)} labels to {args.output}")


if __name__ == "__main__":
    main()
