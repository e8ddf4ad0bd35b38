"""Labeled datasets for `evaluate`: reading them, and mapping their label names to the served model's output
indices. No server here: the served labels come in as a list.

A dataset is one of:

- a folder of class folders, ImageNet style: `DATA/<class>/**/<image>`, each image labeled with its class
  folder's name;
- a CSV file with a header naming a `path` and a `label` column; a `label` cell may hold several labels
  separated by `|`, and a path on several rows takes the labels of all of them;
- a JSON lines file (`.jsonl`) of objects with `path` and `label` (a name, or a list of names).

Relative paths in a file are relative to the file's folder; http(s) URLs are kept as they are. A label is a
served label's text, a WordNet id (`n01440764`) when the head serves ImageNet's list, or in JSON an output
index as an integer.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._constants import IMAGE_EXTENSIONS
from ._exceptions import EvaluationError
from ._imagenet import standard_list

__all__ = ["LabelMap", "LabeledImage", "Sample", "read_dataset"]

LABEL_SEPARATOR = "|"
"""Between several labels in one CSV cell: label texts hold commas ("tabby, tabby cat")."""
PATH_COLUMN = "path"
LABEL_COLUMNS = ("label", "labels")
WORDNET_ID = re.compile(r"n\d{8}")
MAX_LISTED = 20
"""Names an error lists before it says how many more there are."""

_URL_PREFIXES = ("http://", "https://")

Label = str | int
"""A label as a dataset gives it: a name (label text or WordNet id), or an output index."""


@dataclass(frozen=True)
class LabeledImage:
    """An image of a dataset and its labels as the dataset names them."""

    source: str
    labels: tuple[Label, ...]


@dataclass(frozen=True)
class Sample:
    """An image and the output indices of its labels, sorted."""

    source: str
    truth: tuple[int, ...]


def read_dataset(data: str | os.PathLike[str]) -> list[LabeledImage]:
    """The images of `data` and their labels, in a stable order (sorted folders; a file's row order)."""
    path = Path(data)
    if path.is_dir():
        return _read_folders(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: no such folder or file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        images = _read_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        images = _read_jsonl(path)
    else:
        raise EvaluationError(f"{path}: a dataset is a folder of class folders, a .csv or a .jsonl file")
    if not images:
        raise EvaluationError(f"{path} lists no image")
    return images


def _read_folders(root: Path) -> list[LabeledImage]:
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if loose:
        raise EvaluationError(
            f"{root} holds images outside class folders ({_listing(loose)}): put each image in a folder "
            "named by its class, or list images and labels in a .csv or .jsonl file"
        )
    images = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append(LabeledImage(str(path), (folder.name,)))
    if not images:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise EvaluationError(f"no image files in the class folders of {root} (looked for {extensions})")
    return images


def _read_csv(path: Path) -> list[LabeledImage]:
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        label_column = next((name for name in LABEL_COLUMNS if name in columns), None)
        if PATH_COLUMN not in columns or label_column is None:
            raise EvaluationError(
                f"{path}: the first row must name the columns, among them {PATH_COLUMN!r} and 'label' "
                f"(found {', '.join(map(repr, columns)) or 'nothing'})"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            source, cell = (row.get(PATH_COLUMN) or "").strip(), (row.get(label_column) or "").strip()
            if not source or not cell:
                raise EvaluationError(f"{path}, line {line}: a row needs a path and a label")
            labels = [label.strip() for label in cell.split(LABEL_SEPARATOR) if label.strip()]
            rows.append((source, labels))
    return _gather(path, rows)


def _read_jsonl(path: Path) -> list[LabeledImage]:
    rows: list[tuple[str, Sequence[Label]]] = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
        except ValueError as e:
            raise EvaluationError(f"{path}, line {line}: not JSON ({e})") from e
        labels = entry.get("label", entry.get("labels")) if isinstance(entry, dict) else None
        labels = labels if isinstance(labels, list) else [labels]
        source = entry.get(PATH_COLUMN) if isinstance(entry, dict) else None
        if not isinstance(source, str) or not labels or not all(_is_label(label) for label in labels):
            raise EvaluationError(
                f"{path}, line {line}: expected an object with a {PATH_COLUMN!r} (a string) and a 'label' "
                "(a label name, an output index, or a list of them)"
            )
        rows.append((source, labels))
    return _gather(path, rows)


def _is_label(value: object) -> bool:
    return (isinstance(value, str) and bool(value.strip())) or (
        isinstance(value, int) and not isinstance(value, bool)
    )


def _gather(listing: Path, rows: Iterable[tuple[str, Sequence[Label]]]) -> list[LabeledImage]:
    """One image per distinct path, in first-seen order, with the labels of all its rows."""
    labels: dict[str, dict[Label, None]] = {}
    for source, row_labels in rows:
        resolved = source if source.startswith(_URL_PREFIXES) else str(listing.parent / source)
        labels.setdefault(resolved, {}).update(dict.fromkeys(row_labels))
    return [LabeledImage(source, tuple(names)) for source, names in labels.items()]


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


@dataclass(frozen=True)
class LabelMap:
    """Label names to the served model's output indices.

    A name maps by the served label's text (case and runs of whitespace aside), else by a label's first
    comma-separated name ("goldfish" for "goldfish, Carassius auratus"), else, when the served labels are
    ImageNet-1k's or ImageNet-22k's, as a WordNet id. A name that several labels match is ambiguous."""

    labels: tuple[str, ...]
    wordnet_ids: tuple[str, ...] | None = None
    standard: str | None = None
    """"imagenet-1k" or "imagenet-22k" when the served labels are that list."""

    @classmethod
    def for_labels(cls, labels: Sequence[str]) -> LabelMap:
        found = standard_list(labels)
        if found is None:
            return cls(tuple(labels))
        class_list, wordnet_ids = found
        return cls(tuple(labels), tuple(wordnet_ids), class_list.name)

    @property
    def description(self) -> str:
        """How names are mapped, for the report."""
        if self.standard is None:
            return "label text"
        return f"label text or WordNet id ({self.standard})"

    def samples(self, images: Sequence[LabeledImage]) -> list[Sample]:
        """Each image with its labels' output indices. Raises `EvaluationError` listing every name that maps
        to no served label, and every one that maps to several."""
        candidates = {label: self.candidates(label) for image in images for label in image.labels}
        unmapped = sorted(str(label) for label, found in candidates.items() if not found)
        ambiguous = {str(label): found for label, found in candidates.items() if len(found) > 1}
        if unmapped or ambiguous:
            raise EvaluationError(self._unmapped_message(unmapped, ambiguous), unmapped=unmapped)
        return [
            Sample(image.source, tuple(sorted({candidates[label][0] for label in image.labels})))
            for image in images
        ]

    def candidates(self, label: Label) -> list[int]:
        """The output indices `label` may name: one when it maps, none or several when it does not."""
        if isinstance(label, int):
            return [label] if 0 <= label < len(self.labels) else []
        key = _normalized(label)
        found = self._by_text.get(key) or self._by_first_name.get(key)
        if found:
            return found
        if self.wordnet_ids is not None and WORDNET_ID.fullmatch(label):
            return self._by_wordnet_id.get(label, [])
        return []

    @functools.cached_property
    def _by_text(self) -> dict[str, list[int]]:
        return _index_by(_normalized(label) for label in self.labels)

    @functools.cached_property
    def _by_first_name(self) -> dict[str, list[int]]:
        return _index_by(_normalized(label.split(",", 1)[0]) for label in self.labels)

    @functools.cached_property
    def _by_wordnet_id(self) -> dict[str, list[int]]:
        return _index_by(self.wordnet_ids or ())

    def _unmapped_message(self, unmapped: list[str], ambiguous: Mapping[str, list[int]]) -> str:
        parts = []
        if unmapped:
            served = f"the server's {len(self.labels)} labels ({_listing(self.labels, 5)})"
            how = "by label text or WordNet id" if self.standard else "by label text"
            parts.append(f"{len(unmapped)} label name(s) match none of {served} {how}: {_listing(unmapped)}")
            if self.standard is None and any(WORDNET_ID.fullmatch(name) for name in unmapped):
                parts.append(
                    "WordNet ids map only when the served labels are ImageNet-1k's or ImageNet-22k's, "
                    "and these are neither"
                )
        for name, indices in ambiguous.items():
            named = ", ".join(f"{index} {self.labels[index]!r}" for index in indices)
            hint = " (use its WordNet id)" if self.standard else ""
            parts.append(f"{name!r} names {len(indices)} served labels: {named}{hint}")
        return "; ".join(parts)


def _index_by(keys: Iterable[str]) -> dict[str, list[int]]:
    index: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        index.setdefault(key, []).append(position)
    return index


def _listing(names: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"
