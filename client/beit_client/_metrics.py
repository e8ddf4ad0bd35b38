"""The figures of an evaluation, from per-image results; numpy only, no server.

Multi-class (each image has one true class; the model's top-k answer, best first):

- top-1 accuracy: the share of images whose first answer is their class; top-k accuracy: whose class is among
  the first k answers. Mean class accuracy: the mean over classes of their top-1 accuracy.
- per class c (every class with an image): support = images of c; top-1 accuracy = recall = correct / support;
  precision = correct / images answered c (0 when none was); F1 = 2 correct / (support + answered c).
- confused pairs: (true class, first answer) over the images answered wrongly.

Multi-label (each image has a set of true labels; the model's probability for every class). The evaluated
classes are those at least one classified image has; scores of other classes are not looked at.

- average precision (AP) of a class, as scikit-learn's `average_precision_score` (no interpolation): with
  the images ranked by their score for the class, AP = sum over the distinct scores t, from the highest, of
  (R(t) - R(t_before)) * P(t), where P(t) and R(t) are the precision and recall of "score >= t" and
  R(t_before) is the recall at the next higher distinct score (0 for the highest). Tied scores form one step.
  mAP: the mean of the evaluated classes' APs.
- at a threshold, a label is predicted when its probability is >= the threshold. Per class: TP, FP, FN;
  precision = TP / (TP + FP) (0 when nothing is predicted), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP
  + FN). Micro F1: the same over the sums of TP, FP and FN of the evaluated classes; macro F1: the mean of
  their F1s (scikit-learn's `f1_score(average="micro" | "macro")` on those columns).
- confused pairs: (a true label of an image, a label predicted for it that it does not have).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from ._models import ClassMetrics, ConfusedPair, EvaluationFailure, EvaluationReport

__all__ = ["ReportContext", "average_precision", "multi_class_report", "multi_label_report"]

Scores = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ReportContext:
    """What a report says besides the figures."""

    checkpoint: str
    random_weights: bool
    label_mapping: str
    labels: Sequence[str]
    failures: tuple[EvaluationFailure, ...]
    confused_pairs: int

    def fields(self) -> _ContextFields:
        return {
            "checkpoint": self.checkpoint,
            "random_weights": self.random_weights,
            "label_mapping": self.label_mapping,
            "failures": self.failures,
        }


class _ContextFields(TypedDict):
    checkpoint: str
    random_weights: bool
    label_mapping: str
    failures: tuple[EvaluationFailure, ...]


def average_precision(scores: npt.ArrayLike, positives: npt.ArrayLike) -> float:
    """Non-interpolated average precision of one class (see the module docstring); `positives` marks the
    images that have the class, of which there must be at least one."""
    score = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positives, dtype=bool)
    if not positive.any():
        raise ValueError("average precision needs at least one positive")
    order = np.argsort(-score, kind="stable")
    score, positive = score[order], positive[order]
    true_positives = np.cumsum(positive)
    # The last position of each run of equal scores: the threshold "score >= t" takes the whole run.
    steps = np.append(np.flatnonzero(np.diff(score)), score.size - 1)
    hits = true_positives[steps]
    precision = hits / (steps + 1)
    recall = hits / hits[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _f1(true_positives: int, false_positives: int, false_negatives: int) -> float:
    denominator = 2 * true_positives + false_positives + false_negatives
    return 2 * true_positives / denominator if denominator else 0.0


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _top_pairs(context: ReportContext, counts: Counter[tuple[int, int]]) -> tuple[ConfusedPair, ...]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: context.confused_pairs]
    labels = context.labels
    return tuple(ConfusedPair(a, labels[a], b, labels[b], count) for (a, b), count in ranked)


def multi_class_report(
    context: ReportContext, truth: Sequence[int], answers: Sequence[Sequence[int]], top_k: int
) -> EvaluationReport:
    """`truth[i]`: image i's class; `answers[i]`: the model's top answers for it, best first (at least
    `top_k`, or every class when there are fewer)."""
    true = np.asarray(truth, dtype=np.int64)
    first = np.asarray([answer[0] for answer in answers], dtype=np.int64)
    in_top_k = np.asarray([t in answer[:top_k] for t, answer in zip(truth, answers, strict=True)], dtype=bool)
    correct = first == true
    rows = []
    for c in np.unique(true).tolist():
        of_class = true == c
        support, hits, answered = int(of_class.sum()), int(correct[of_class].sum()), int((first == c).sum())
        rows.append(
            ClassMetrics(
                index=c,
                label=context.labels[c],
                support=support,
                precision=_ratio(hits, answered),
                recall=hits / support,
                f1=_f1(hits, answered - hits, support - hits),
                top1_accuracy=hits / support,
                top_k_accuracy=float(in_top_k[of_class].mean()),
            )
        )
    confused = Counter(zip(true[~correct].tolist(), first[~correct].tolist(), strict=True))
    empty = true.size == 0
    return EvaluationReport(
        **context.fields(),
        images=int(true.size),
        classes=len(rows),
        multi_label=False,
        per_class=tuple(rows),
        confused_pairs=_top_pairs(context, confused),
        top_k=top_k,
        top1_accuracy=None if empty else float(correct.mean()),
        top_k_accuracy=None if empty else float(in_top_k.mean()),
        mean_class_accuracy=None if empty else float(np.mean([row.recall for row in rows])),
    )


def multi_label_report(
    context: ReportContext,
    truth: Sequence[Sequence[int]],
    classes: Sequence[int],
    scores: Sequence[Sequence[float]],
    threshold: float,
) -> EvaluationReport:
    """`truth[i]`: image i's labels; `scores[i][j]`: the model's probability of class `classes[j]` for it.
    Labels outside `classes` are not evaluated."""
    column = {c: j for j, c in enumerate(classes)}
    score = np.asarray(scores, dtype=np.float64).reshape(len(truth), len(classes))
    has = np.zeros(score.shape, dtype=bool)
    for i, labels in enumerate(truth):
        has[i, [column[c] for c in labels if c in column]] = True
    predicted = score >= threshold
    evaluated = np.flatnonzero(has.any(axis=0)).tolist()
    rows = []
    precisions = []
    for j in evaluated:
        tp = int((predicted[:, j] & has[:, j]).sum())
        fp = int((predicted[:, j] & ~has[:, j]).sum())
        fn = int((~predicted[:, j] & has[:, j]).sum())
        c = classes[j]
        precisions.append(average_precision(score[:, j], has[:, j]))
        rows.append(
            ClassMetrics(
                index=c,
                label=context.labels[c],
                support=tp + fn,
                precision=_ratio(tp, tp + fp),
                recall=tp / (tp + fn),
                f1=_f1(tp, fp, fn),
                average_precision=precisions[-1],
            )
        )
    kept = np.asarray(evaluated, dtype=np.int64)
    tp = int((predicted[:, kept] & has[:, kept]).sum())
    fp = int((predicted[:, kept] & ~has[:, kept]).sum())
    fn = int((~predicted[:, kept] & has[:, kept]).sum())
    confused: Counter[tuple[int, int]] = Counter()
    for i in range(len(truth)):
        wrong = [classes[j] for j in evaluated if predicted[i, j] and not has[i, j]]
        for a in (classes[j] for j in np.flatnonzero(has[i]).tolist()):
            confused.update((a, b) for b in wrong)
    empty = not rows
    return EvaluationReport(
        **context.fields(),
        images=len(truth),
        classes=len(rows),
        multi_label=True,
        per_class=tuple(rows),
        confused_pairs=_top_pairs(context, confused),
        threshold=threshold,
        mean_average_precision=None if empty else float(np.mean(precisions)),
        micro_f1=None if empty else _f1(tp, fp, fn),
        macro_f1=None if empty else float(np.mean([row.f1 for row in rows])),
    )
