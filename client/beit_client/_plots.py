"""An evaluation report as a PNG: the weakest classes and the most confused pairs.

matplotlib is not among the SDK's dependencies (a client-only install stays small); it comes with the
`loadtest` extra, or `pip install matplotlib`. It is imported when a PNG is asked for, and its absence is a
`PlotUnavailableError` saying how to install it.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

from ._models import EvaluationReport

__all__ = ["PlotUnavailableError", "write_png"]

MAX_CLASSES_SHOWN = 30
"""The weakest classes drawn; the JSON report has them all."""
LABEL_WIDTH = 28
"""Characters of a class label kept on an axis."""


class PlotUnavailableError(RuntimeError):
    pass


def _short(label: str) -> str:
    return textwrap.shorten(label, LABEL_WIDTH, placeholder="…")


def _headline(report: EvaluationReport) -> str:
    figures = ", ".join(f"{name} {value:.2%}" for name, value in report.titled_summary().items())
    task = "multi-label" if report.multi_label else "multi-class"
    return f"{report.checkpoint} ({task}): {report.images} images, {report.classes} classes\n{figures}"


def write_png(report: EvaluationReport, path: str | os.PathLike[str]) -> None:
    """Draws `report`: per class, its top-1 accuracy (multi-class) or average precision (multi-label), the
    weakest first; beside it the most confused (true -> predicted) pairs."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise PlotUnavailableError(
            "a PNG needs matplotlib, which the client does not install: pip install matplotlib "
            "(or the beit-triton[loadtest] extra)"
        ) from e

    metric = "average_precision" if report.multi_label else "top1_accuracy"
    title = "average precision" if report.multi_label else "top-1 accuracy"
    rows = sorted(report.per_class, key=lambda row: (getattr(row, metric), -row.support, row.index))
    rows = rows[:MAX_CLASSES_SHOWN]
    pairs = report.confused_pairs
    height = max(4.0, 0.28 * max(len(rows), len(pairs)) + 2.0)
    figure = Figure(figsize=(14, height), layout="constrained")
    figure.suptitle(_headline(report), fontsize=10)
    classes, confusions = figure.subplots(1, 2, width_ratios=(1, 1))
    _bars(
        classes,
        [f"{_short(row.label)} ({row.support})" for row in rows],
        [getattr(row, metric) for row in rows],
        f"{title} per class, weakest {len(rows)} of {len(report.per_class)} (support)",
        percent=True,
    )
    _bars(
        confusions,
        [f"{_short(pair.true_label)} → {_short(pair.predicted_label)}" for pair in pairs],
        [pair.count for pair in pairs],
        "most confused: true → predicted (images)",
        percent=False,
    )
    figure.savefig(path, dpi=100)


def _bars(axes: Any, names: list[str], values: list[float], title: str, *, percent: bool) -> None:
    axes.set_title(title, fontsize=10)
    if not names:
        axes.text(0.5, 0.5, "none", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
        return
    positions = list(range(len(names)))
    axes.barh(positions, values, color="tab:blue" if percent else "tab:orange")
    axes.set_yticks(positions, names, fontsize=8)
    axes.invert_yaxis()
    if percent:
        axes.set_xlim(0, 1)
        axes.xaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    else:
        axes.xaxis.get_major_locator().set_params(integer=True)
