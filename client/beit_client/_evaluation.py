"""An evaluation in progress, without its network I/O: which images are left, the results file that makes it
resumable, and the report. The clients' `evaluate` sends the images and hands the answers to `record`.

What is asked of the server: a multi-class head's top k through Triton's classification extension, the
answer `classify` gives; a multi-label head's raw `PROBABILITIES` tensor, every class's probability exactly.
Asking the extension for every class instead (`class_count` = number of labels) would send each score as
text rounded to 6 decimals, which ties scores that average precision must rank, and measured here on a
21,841-class head took 9.4x the bytes (6.5 MB against 0.70 MB for 8 images) and 3.9-5x the time.

The results file (JSON lines) starts with a header naming the evaluation (checkpoint, head, top k or the
evaluated classes); each further line is one classified image. A rerun with the same file skips the images
already in it, so an interrupted evaluation finishes with each image there once; a last line cut short by
a kill is dropped and its image classified again. Failed images are not written: a rerun tries them again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, cast

import numpy as np
import numpy.typing as npt

from ._base_client import SCORES_TASK, Task, classify_task
from ._datasets import LabeledImage, LabelMap, Sample, read_dataset
from ._exceptions import BeitClientError, EvaluationError, InvalidImageError
from ._metrics import ReportContext, multi_class_report, multi_label_report
from ._models import EvaluationFailure, EvaluationReport, ModelInfo, Prediction

__all__ = ["DatasetInput", "EvaluationRun"]

RESULTS_FORMAT = 1
HEADER_KEY = "beit_client_evaluation"

DatasetInput = str | os.PathLike[str] | Sequence[LabeledImage]
"""A dataset: a folder of class folders, a .csv or .jsonl file (see `beit_client._datasets`), or the labeled
images themselves."""


@dataclass(frozen=True)
class Result:
    """What the server answered for one image: the top answers and their scores (multi-class), or the scores
    of the evaluated classes (multi-label, `answers` empty)."""

    answers: tuple[int, ...]
    scores: tuple[float, ...]


class EvaluationRun:
    """One evaluation: its samples, the results so far (read back from `output` when it exists), and the
    report. Use as a context manager: the results file stays open for appending until it exits."""

    def __init__(
        self,
        samples: Sequence[Sample],
        info: ModelInfo,
        label_map: LabelMap,
        *,
        top_k: int,
        threshold: float,
        confused_pairs: int,
        output: Path | None,
    ) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        if confused_pairs < 0:
            raise ValueError(f"confused_pairs must be at least 0, got {confused_pairs}")
        self.samples = list(samples)
        self.info = info
        self.label_map = label_map
        self.top_k = min(top_k, info.num_labels)
        self.answers_k = self.top_k
        """How many answers each image gets: `top_k`, or more where the results file holds more."""
        self.threshold = threshold
        self.confused_pairs = confused_pairs
        self.output = output
        if not info.multi_label:
            several = [sample.source for sample in self.samples if len(sample.truth) != 1]
            if several:
                raise EvaluationError(
                    f"{len(several)} image(s) have several labels, but {info.checkpoint} is multi-class: "
                    f"each image needs one label (first: {several[0]})"
                )
        # Multi-label: the classes any image has, whose scores each result keeps.
        self.classes = sorted({c for sample in self.samples for c in sample.truth})
        self.header = self._header()
        self.results: dict[str, Result] = {}
        self.failures: dict[str, EvaluationFailure] = {}
        self._file: IO[str] | None = None
        if output is not None:
            self.results = self._read_results(output)
        wanted = {sample.source for sample in self.samples}
        self.done = sum(source in wanted for source in self.results)
        self.pending = [sample for sample in self.samples if sample.source not in self.results]

    @classmethod
    def start(
        cls,
        data: DatasetInput,
        info: ModelInfo,
        labels: Sequence[str],
        *,
        top_k: int,
        threshold: float,
        confused_pairs: int,
        output: str | os.PathLike[str] | None,
    ) -> EvaluationRun:
        """Reads `data`, maps its labels to `labels` (the served ones, by output index) and the results
        already in `output`."""
        images = read_dataset(data) if isinstance(data, str | os.PathLike) else list(data)
        if not images:
            raise EvaluationError("the dataset has no image")
        label_map = LabelMap.for_labels(labels)
        return cls(
            label_map.samples(images),
            info,
            label_map,
            top_k=top_k,
            threshold=threshold,
            confused_pairs=confused_pairs,
            output=None if output is None else Path(output),
        )

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def processed(self) -> int:
        """The dataset's images answered so far: with a result (this run or before) or failed."""
        return self.done + len(self.failures)

    @property
    def sources(self) -> list[str]:
        """The images still to classify, in dataset order."""
        return [sample.source for sample in self.pending]

    @property
    def task(self) -> Task[Any]:
        return SCORES_TASK if self.info.multi_label else classify_task(self.answers_k)

    def __enter__(self) -> EvaluationRun:
        if self.output is not None and self.pending:
            self._file = self.output.open("a", encoding="utf-8")
            if self.output.stat().st_size == 0:
                self._write([self.header])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def record(self, indices: Sequence[int], outcomes: Sequence[object]) -> None:
        """The answers for `pending[i]` for each i of `indices`. A refused image is a failure of its own;
        any other error (the server unavailable after the retries) is raised, after the answers before it
        are written."""
        lines = []
        error: BeitClientError | None = None
        for index, outcome in zip(indices, outcomes, strict=True):
            sample = self.pending[index]
            if isinstance(outcome, InvalidImageError):
                self.failures[sample.source] = EvaluationFailure(sample.source, outcome.reason)
            elif isinstance(outcome, BeitClientError):
                error = error or outcome
            else:
                result = self._result(outcome)
                self.results[sample.source] = result
                self.failures.pop(sample.source, None)
                self.done += 1
                lines.append(self._line(sample, result))
        self._write(lines)
        if error is not None:
            raise error

    def report(self) -> EvaluationReport:
        """The figures over the dataset's images that have results."""
        answered = [sample for sample in self.samples if sample.source in self.results]
        context = ReportContext(
            checkpoint=self.info.checkpoint,
            random_weights=self.info.random_weights,
            label_mapping=self.label_map.description,
            labels=self.label_map.labels,
            failures=tuple(self.failures.values()),
            confused_pairs=self.confused_pairs,
        )
        results = [self.results[sample.source] for sample in answered]
        if self.info.multi_label:
            return multi_label_report(
                context,
                [sample.truth for sample in answered],
                self.classes,
                [result.scores for result in results],
                self.threshold,
            )
        return multi_class_report(
            context,
            [sample.truth[0] for sample in answered],
            [result.answers for result in results],
            self.top_k,
        )

    def _result(self, outcome: object) -> Result:
        if self.info.multi_label:
            scores: npt.NDArray[np.float32] = np.asarray(outcome, dtype=np.float32)
            return Result((), tuple(scores[self.classes].tolist()))
        predictions = cast(Sequence[Prediction], outcome)
        return Result(
            tuple(prediction.index for prediction in predictions),
            tuple(prediction.score for prediction in predictions),
        )

    def _header(self) -> dict[str, Any]:
        header: dict[str, Any] = {
            HEADER_KEY: RESULTS_FORMAT,
            "checkpoint": self.info.checkpoint,
            "num_labels": self.info.num_labels,
            "multi_label": self.info.multi_label,
        }
        if self.info.multi_label:
            header["classes"] = self.classes
        else:
            header["top_k"] = self.answers_k
        return header

    def _line(self, sample: Sample, result: Result) -> dict[str, Any]:
        if self.info.multi_label:
            return {"source": sample.source, "truth": list(sample.truth), "scores": list(result.scores)}
        return {
            "source": sample.source,
            "truth": sample.truth[0],
            "top": list(result.answers),
            "scores": list(result.scores),
        }

    def _write(self, lines: Sequence[dict[str, Any]]) -> None:
        if self._file is None or not lines:
            return
        self._file.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        self._file.flush()

    def _read_results(self, output: Path) -> dict[str, Result]:
        """The results in `output`, after checking that its header is this evaluation's. A partial last line
        (a killed run) is cut off, so that appending starts on a fresh line."""
        if not output.exists():
            return {}
        data = output.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            with output.open("r+b") as file:
                file.truncate(complete)
        lines = data[:complete].splitlines()
        if not lines:
            return {}
        self._check_header(output, lines[0])
        results = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                source = entry["source"]
                result = Result(tuple(entry.get("top", ())), tuple(entry["scores"]))
            except (ValueError, KeyError, TypeError):
                continue
            results[source] = result
        return results

    def _check_header(self, output: Path, line: bytes) -> None:
        try:
            header = json.loads(line)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get(HEADER_KEY) != RESULTS_FORMAT:
            raise EvaluationError(
                f"{output} is not a results file of `evaluate`: give another output file, or remove it"
            )
        expected = self.header
        stored_top_k = header.get("top_k")
        differences = [
            f"{key} {header.get(key)!r} there, {expected[key]!r} now"
            for key in ("checkpoint", "num_labels", "multi_label", "classes")
            if key in expected and header.get(key) != expected[key]
        ]
        if "top_k" in expected and not (isinstance(stored_top_k, int) and stored_top_k >= self.top_k):
            differences.append(f"top k {stored_top_k!r} there, {self.top_k} now")
        if differences:
            raise EvaluationError(
                f"{output} holds another evaluation ({'; '.join(differences)}): give another output file, "
                "or remove it to start over"
            )
        if isinstance(stored_top_k, int):
            self.answers_k = self.header["top_k"] = stored_top_k
