"""Results the SDK returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beit_preprocessing import PreprocessingConfig

__all__ = [
    "ClassMetrics",
    "ConfusedPair",
    "EvaluationFailure",
    "EvaluationReport",
    "ModelInfo",
    "Prediction",
]


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    index: int


@dataclass(frozen=True)
class ModelInfo:
    """What the served checkpoint is: the `beit` model config's parameters (written by beit-build)."""

    checkpoint: str
    num_labels: int
    embedding_size: int
    max_batch_size: int
    random_weights: bool
    multi_label: bool
    preprocessing: PreprocessingConfig


@dataclass(frozen=True)
class ClassMetrics:
    """One class of an evaluation: its support (images labeled with it) and how it fared. Multi-class:
    top-1 and top-k accuracy (top-1 accuracy is the class's recall), precision and F1 of the top-1 answer.
    Multi-label: average precision, and precision, recall and F1 at the threshold. What does not apply is
    None."""

    index: int
    label: str
    support: int
    precision: float
    recall: float
    f1: float
    top1_accuracy: float | None = None
    top_k_accuracy: float | None = None
    average_precision: float | None = None


@dataclass(frozen=True)
class ConfusedPair:
    """A true class and a class answered in its place, with how often. Multi-class: the top-1 answer of an
    image of `true_label` was `predicted_label`. Multi-label: an image labeled `true_label` got
    `predicted_label`, which it does not have, at or above the threshold."""

    true_index: int
    true_label: str
    predicted_index: int
    predicted_label: str
    count: int


@dataclass(frozen=True)
class EvaluationFailure:
    """An image of the dataset that could not be classified, and why; a rerun with the same results file
    tries it again."""

    source: str
    reason: str


@dataclass(frozen=True)
class EvaluationReport:
    """What `evaluate` measured over the images that were classified. Multi-class sets `top1_accuracy`,
    `top_k_accuracy` (for `top_k`) and `mean_class_accuracy`; multi-label sets `mean_average_precision`,
    `micro_f1` and `macro_f1` (at `threshold`). `per_class` is in output-index order; `confused_pairs` most
    frequent first."""

    checkpoint: str
    multi_label: bool
    random_weights: bool
    label_mapping: str
    images: int
    classes: int
    failures: tuple[EvaluationFailure, ...]
    per_class: tuple[ClassMetrics, ...]
    confused_pairs: tuple[ConfusedPair, ...]
    top_k: int | None = None
    top1_accuracy: float | None = None
    top_k_accuracy: float | None = None
    mean_class_accuracy: float | None = None
    threshold: float | None = None
    mean_average_precision: float | None = None
    micro_f1: float | None = None
    macro_f1: float | None = None

    def summary(self) -> dict[str, float]:
        """The headline figures by name: what applies to this task."""
        figures = {
            "top1_accuracy": self.top1_accuracy,
            f"top{self.top_k}_accuracy": self.top_k_accuracy,
            "mean_class_accuracy": self.mean_class_accuracy,
            "mean_average_precision": self.mean_average_precision,
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
        }
        return {name: value for name, value in figures.items() if value is not None}

    def titled_summary(self) -> dict[str, float]:
        """`summary()` under the names people read: "top-1 accuracy", "mAP", "micro F1"."""
        titles = {
            "top1_accuracy": "top-1 accuracy",
            f"top{self.top_k}_accuracy": f"top-{self.top_k} accuracy",
            "mean_class_accuracy": "mean class accuracy",
            "mean_average_precision": "mAP",
            "micro_f1": "micro F1",
            "macro_f1": "macro F1",
        }
        return {titles[name]: value for name, value in self.summary().items()}

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data: fields that do not apply left out."""
        return _without_none(
            {
                "checkpoint": self.checkpoint,
                "task": "multi-label" if self.multi_label else "multi-class",
                "random_weights": self.random_weights,
                "label_mapping": self.label_mapping,
                "images": self.images,
                "classes": self.classes,
                "failed": len(self.failures),
                "top_k": self.top_k,
                "threshold": self.threshold,
                "metrics": self.summary(),
                "per_class": [_without_none(asdict(row)) for row in self.per_class],
                "confused_pairs": [asdict(pair) for pair in self.confused_pairs],
                "failures": [asdict(failure) for failure in self.failures],
            }
        )


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}
