"""`beit-client`: classify or embed images with the served model, check its health, show what it serves.

    beit-client classify cat.jpg photos/ https://example.com/dog.png [--top-k 5] [--json]
    beit-client classify photos/ --output results.jsonl   # batch job: progress bar, resumable
    beit-client embed photos/ --output emb.npy             # writes emb.npy and emb.txt (one source a row)
    beit-client evaluate val/ --output val.jsonl           # accuracy on labeled images: table, JSON, PNG
    beit-client health
    beit-client info

Results are printed as they arrive, in input order. Exit status: 0 when every image succeeded, 1 when any
failed (listed on stderr; the rest are still written) or nothing could be done, 2 for usage errors, 130
when interrupted (Ctrl-C): what was written stays, and a batch job's rerun finishes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from ._client import BeitClient
from ._constants import (
    DEFAULT_CONFUSED_PAIRS,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_THRESHOLD,
    DEFAULT_TIMEOUT,
    DEFAULT_TOP_K,
    IMAGE_EXTENSIONS,
)
from ._exceptions import BeitClientError, InvalidImageError
from ._models import EvaluationReport, ModelInfo, Prediction
from ._plots import PlotUnavailableError, write_png

__all__ = [
    "BatchJob",
    "BatchReport",
    "EXIT_INTERRUPTED",
    "Failure",
    "classify_to_file",
    "collect_sources",
    "completed_sources",
    "folders_without_images",
    "format_report",
    "main",
    "run",
]

DEFAULT_URL = f"http://localhost:{DEFAULT_HTTP_PORT}"
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130
"""128 + SIGINT, what a shell reports for a program stopped by Ctrl-C."""
_URL_PREFIXES = ("http://", "https://")

Outcome = list[Prediction] | BeitClientError


def collect_sources(arguments: Sequence[str]) -> list[str]:
    """URLs and files as given; folders walked recursively for image files, in sorted order."""
    sources: list[str] = []
    for argument in arguments:
        if argument.startswith(_URL_PREFIXES) or not os.path.isdir(argument):
            sources.append(argument)
            continue
        for path in sorted(Path(argument).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                sources.append(str(path))
    return sources


def folders_without_images(arguments: Sequence[str]) -> list[str]:
    """The folders among `arguments` that hold no image file (by extension) at any depth."""
    return [
        argument
        for argument in arguments
        if not argument.startswith(_URL_PREFIXES)
        and os.path.isdir(argument)
        and not collect_sources([argument])
    ]


def completed_sources(output: Path) -> set[str]:
    """Sources already answered in a results file. A killed run may leave a partial last line: it is cut off
    here so that appending starts on a fresh line, and its image is done again."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    complete_length = data.rfind(b"\n") + 1
    if complete_length < len(data):
        with output.open("r+b") as file:
            file.truncate(complete_length)
    done = set()
    for line in data[:complete_length].splitlines():
        try:
            done.add(json.loads(line)["source"])
        except (ValueError, KeyError, TypeError):
            continue
    return done


@dataclass(frozen=True)
class Failure:
    """An image that failed: its position among the command's images, its source, and the error."""

    index: int
    source: str
    error: BeitClientError

    def __str__(self) -> str:
        reason = self.error.reason if isinstance(self.error, InvalidImageError) else str(self.error)
        return f"image {self.index} ({self.source}): {reason}"


@dataclass
class BatchReport:
    written: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)


def _prediction_dicts(predictions: list[Prediction]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(prediction) for prediction in predictions]


def _result_line(source: str, predictions: list[Prediction]) -> str:
    return json.dumps({"source": source, "predictions": _prediction_dicts(predictions)}, ensure_ascii=False)


def classified_groups(
    client: BeitClient, sources: Sequence[str], *, top_k: int, concurrency: int
) -> Generator[tuple[int, list[str], list[Outcome]], None, None]:
    """`(start, group, outcomes)` for consecutive groups of `sources` (one request each, the model's max
    batch size), `concurrency` groups in flight, each yielded as soon as its request completes. Closing the
    iterator early (an interrupt) cancels the groups not yet sent and does not wait for those in flight."""
    group_size = client.model_info().max_batch_size or 1
    pool = ThreadPoolExecutor(concurrency, thread_name_prefix="beit-batch")
    finished = False
    try:
        futures: dict[Future[list[Outcome]], tuple[int, list[str]]] = {}
        for start in range(0, len(sources), group_size):
            group = list(sources[start : start + group_size])
            futures[pool.submit(client.classify, group, top_k, return_exceptions=True)] = (start, group)
        for future in as_completed(futures):
            start, group = futures[future]
            yield start, group, future.result()
        finished = True
    finally:
        pool.shutdown(wait=finished, cancel_futures=True)


class BatchJob:
    """Classifies `sources` into JSON lines `{"source", "predictions"}` in `output`, appending each line as
    soon as its request completes. Sources already in `output` are skipped, so a rerun after an interruption
    finishes the job with every image written exactly once; failed images are not written and are retried
    by a rerun. `report` counts what was done, also after an interruption."""

    def __init__(
        self,
        client: BeitClient,
        sources: Sequence[str],
        output: Path,
        *,
        top_k: int = DEFAULT_TOP_K,
        concurrency: int = DEFAULT_MAX_CONCURRENCY,
        progress: bool = True,
    ) -> None:
        self.client = client
        self.sources = list(dict.fromkeys(sources))
        self.output = output
        self.top_k = top_k
        self.concurrency = concurrency
        self.progress = progress
        self.report = BatchReport()

    def run(self) -> BatchReport:
        done = completed_sources(self.output)
        pending = [source for source in self.sources if source not in done]
        self.report.skipped = len(self.sources) - len(pending)
        if not pending:
            return self.report
        position = {source: index for index, source in enumerate(self.sources)}
        groups = classified_groups(self.client, pending, top_k=self.top_k, concurrency=self.concurrency)
        with (
            self.output.open("a", encoding="utf-8") as file,
            tqdm(total=len(pending), unit="img", disable=not self.progress) as bar,
            closing(groups),
        ):
            for _, group, outcomes in groups:
                for source, outcome in zip(group, outcomes, strict=True):
                    if isinstance(outcome, BeitClientError):
                        self.report.failures.append(Failure(position[source], source, outcome))
                        continue
                    file.write(_result_line(source, outcome) + "\n")
                    self.report.written += 1
                file.flush()
                bar.update(len(group))
        return self.report


def classify_to_file(
    client: BeitClient,
    sources: Sequence[str],
    output: Path,
    *,
    top_k: int = DEFAULT_TOP_K,
    concurrency: int = DEFAULT_MAX_CONCURRENCY,
    progress: bool = True,
) -> BatchReport:
    """`BatchJob(...).run()`."""
    job = BatchJob(client, sources, output, top_k=top_k, concurrency=concurrency, progress=progress)
    return job.run()


def _print_table(source: str, predictions: list[Prediction], out: IO[str]) -> None:
    print(source, file=out)
    print(f"  {'score':>8}  {'index':>6}  label", file=out)
    for prediction in predictions:
        print(f"  {prediction.score:8.4f}  {prediction.index:6d}  {prediction.label}", file=out)


def _print_failure(failure: Failure) -> None:
    # Through tqdm, so that a progress bar on stderr is redrawn below the line instead of through it.
    tqdm.write(f"failed: {failure}", file=sys.stderr)


def _failed_summary(count: int) -> int:
    if count:
        print(f"{count} image(s) failed", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _warn_if_random(info: ModelInfo) -> None:
    if info.random_weights:
        print(
            f"warning: the server's model ({info.checkpoint}) has random weights: its predictions are noise "
            "(built with RANDOM= or beit-build --random; build a trained checkpoint for real labels)",
            file=sys.stderr,
        )


def _sources(args: argparse.Namespace) -> list[str] | None:
    """The images the command names, or None (with the reason on stderr) when a folder holds none."""
    empty = folders_without_images(args.sources)
    for folder in empty:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        print(f"beit-client: error: no image files in {folder} (looked for {extensions})", file=sys.stderr)
    return None if empty else collect_sources(args.sources)


def _prepare_output(output: Path) -> bool:
    """Creates the folder `output` goes into; False (with the reason on stderr) when that is impossible or
    it cannot be written, so nothing is sent for results that could not be kept."""
    folder = output.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"beit-client: error: cannot create {folder} for {output}: {e.strerror or e}", file=sys.stderr)
        return False
    if not os.access(folder, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        print(f"beit-client: error: {output} cannot be written", file=sys.stderr)
        return False
    return True


def _classify(client: BeitClient, args: argparse.Namespace) -> int:
    sources = _sources(args)
    if sources is None:
        return EXIT_FAILED
    output = None if args.output is None else Path(args.output)
    if output is not None and not _prepare_output(output):
        return EXIT_FAILED
    _warn_if_random(client.model_info())
    if output is None:
        return _classify_to_stdout(client, sources, args)
    job = BatchJob(
        client,
        sources,
        output,
        top_k=args.top_k,
        concurrency=args.concurrency,
        progress=not args.no_progress,
    )
    try:
        report = job.run()
    except KeyboardInterrupt:
        print(
            f"beit-client: interrupted: {job.report.written} written to {output}; run the same command "
            "again to finish",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    for failure in report.failures:
        _print_failure(failure)
    print(f"{report.written} written, {report.skipped} already done", file=sys.stderr)
    return _failed_summary(len(report.failures))


def _classify_to_stdout(client: BeitClient, sources: list[str], args: argparse.Namespace) -> int:
    """Prints each image's result as soon as it and every image before it are answered, so the output is in
    input order and streams; a progress bar on stderr when stdout is a file or a pipe."""
    waiting: dict[int, tuple[list[str], list[Outcome]]] = {}
    next_start = 0
    failures = 0
    groups = classified_groups(client, sources, top_k=args.top_k, concurrency=args.concurrency)
    show_bar = not args.no_progress and not sys.stdout.isatty()
    with tqdm(total=len(sources), unit="img", disable=not show_bar) as bar, closing(groups):
        for start, group, outcomes in groups:
            waiting[start] = (group, outcomes)
            while next_start in waiting:
                ready, ready_outcomes = waiting.pop(next_start)
                for offset, (source, outcome) in enumerate(zip(ready, ready_outcomes, strict=True)):
                    if isinstance(outcome, BeitClientError):
                        failures += 1
                        _print_failure(Failure(next_start + offset, source, outcome))
                    elif args.json:
                        print(_result_line(source, outcome))
                    else:
                        _print_table(source, outcome, sys.stdout)
                sys.stdout.flush()
                next_start += len(ready)
            bar.update(len(group))
    return _failed_summary(failures)


def _embed(client: BeitClient, args: argparse.Namespace) -> int:
    sources = _sources(args)
    if sources is None:
        return EXIT_FAILED
    output = None if args.output is None else Path(args.output)
    if output is not None and not _prepare_output(output):
        return EXIT_FAILED
    outcomes = client.embed(sources, return_exceptions=True)
    failures = [
        Failure(index, source, outcome)
        for index, (source, outcome) in enumerate(zip(sources, outcomes, strict=True))
        if isinstance(outcome, BeitClientError)
    ]
    succeeded = [(s, o) for s, o in zip(sources, outcomes, strict=True) if not isinstance(o, BeitClientError)]
    for failure in failures:
        _print_failure(failure)
    if output is None:
        for source, vector in succeeded:
            print(json.dumps({"source": source, "embedding": vector.tolist()}))
        return _failed_summary(len(failures))
    vectors = np.stack([vector for _, vector in succeeded]) if succeeded else np.empty((0, 0), np.float32)
    np.save(output, vectors)
    # Row i of the array belongs to line i of the list.
    sources_file = output.with_suffix(".txt")
    sources_file.write_text("".join(f"{source}\n" for source, _ in succeeded), encoding="utf-8")
    print(
        f"{len(succeeded)} embeddings {vectors.shape} -> {output}, sources -> {sources_file}", file=sys.stderr
    )
    return _failed_summary(len(failures))


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def format_report(report: EvaluationReport) -> str:
    """The report as text: the headline figures, a per-class table (weakest first) and the most confused
    pairs."""
    task = "multi-label" if report.multi_label else "multi-class"
    lines = [
        f"checkpoint: {report.checkpoint} ({task}; labels mapped by {report.label_mapping})",
        f"images: {report.images} classified, {len(report.failures)} failed; classes: {report.classes}",
    ]
    if report.multi_label:
        lines.append(f"threshold: {report.threshold}")
    lines += [f"{name}: {_percent(value)}" for name, value in report.titled_summary().items()]
    if report.multi_label:
        header = ["index", "support", "AP", "precision", "recall", "F1"]
        rows = sorted(report.per_class, key=lambda row: (row.average_precision, -row.support, row.index))
        figures = [[row.average_precision, row.precision, row.recall, row.f1] for row in rows]
    else:
        header = ["index", "support", "top-1", f"top-{report.top_k}", "precision", "F1"]
        rows = sorted(report.per_class, key=lambda row: (row.top1_accuracy, -row.support, row.index))
        figures = [[row.top1_accuracy, row.top_k_accuracy, row.precision, row.f1] for row in rows]
    lines += ["", "per class, weakest first:", "  ".join(f"{name:>9}" for name in header) + "  label"]
    for row, values in zip(rows, figures, strict=True):
        cells = [f"{row.index:>9}", f"{row.support:>9}", *(f"{_percent(value):>9}" for value in values)]
        lines.append("  ".join(cells) + f"  {row.label}")
    lines += ["", "most confused, true -> predicted:"]
    lines += [
        f"{pair.count:>9}  {pair.true_label} -> {pair.predicted_label}" for pair in report.confused_pairs
    ] or ["     none"]
    return "\n".join(lines)


def _report_paths(args: argparse.Namespace) -> tuple[Path | None, Path | None, bool]:
    """Where the JSON report and the PNG go, and whether the PNG was asked for by name. Beside `--output`
    unless given."""
    output = None if args.output is None else Path(args.output)
    report = Path(args.report) if args.report else None
    png = Path(args.png) if args.png else None
    if output is not None:
        stem = output.with_suffix("").name
        report = report or output.with_name(f"{stem}.report.json")
        png = png or output.with_name(f"{stem}.report.png")
    return report, png, args.png is not None


def _evaluate(client: BeitClient, args: argparse.Namespace) -> int:
    report_path, png_path, png_asked = _report_paths(args)
    for path in (args.output and Path(args.output), report_path, png_path):
        if path and not _prepare_output(path):
            return EXIT_FAILED
    _warn_if_random(client.model_info())
    bar: tqdm[Any] | None = None
    progress = (0, 0)

    def show(processed: int, total: int) -> None:
        nonlocal bar, progress
        if bar is None:
            bar = tqdm(total=total, initial=processed, unit="img", disable=args.no_progress)
        bar.update(processed - bar.n)
        progress = (processed, total)

    try:
        report = client.evaluate(
            args.data,
            top_k=args.top_k,
            threshold=args.threshold,
            output=args.output,
            confused_pairs=args.pairs,
            progress=show,
        )
    except KeyboardInterrupt:
        done = f"{progress[0]} of {progress[1]} images done"
        where = (
            f"; the results are in {args.output}: run the same command again to finish" if args.output else ""
        )
        print(f"beit-client: interrupted: {done}{where}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
    for failure in report.failures:
        tqdm.write(f"failed: {failure.source}: {failure.reason}", file=sys.stderr)
    print(format_report(report))
    if report_path is not None:
        report_path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
        print(f"report -> {report_path}", file=sys.stderr)
    code = _failed_summary(len(report.failures))
    if png_path is not None:
        try:
            write_png(report, png_path)
            print(f"plot -> {png_path}", file=sys.stderr)
        except PlotUnavailableError as e:
            print(f"{'error' if png_asked else 'note'}: no PNG: {e}", file=sys.stderr)
            code = EXIT_FAILED if png_asked else code
    return code


def _health(client: BeitClient, args: argparse.Namespace) -> int:
    live, ready = client.live(), client.ready()
    if ready:
        # Triton's metrics port answers the health routes with 200 too; its model config tells them apart.
        client.model_info()
    print(f"server: {client.url}\nlive: {live}\nready: {ready}")
    return 0 if live and ready else 1


def _info(client: BeitClient, args: argparse.Namespace) -> int:
    info = client.model_info()
    _warn_if_random(info)
    print(json.dumps(dataclasses.asdict(info), indent=2))
    return 0


def _headers(values: Sequence[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"a header is NAME:VALUE, got {value!r}")
        headers[name.strip()] = content.strip()
    return headers


def build_parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument(
        "--url",
        default=DEFAULT_URL,
        help="the server: http(s)://HOST:PORT (Triton's HTTP port, 8000 by default) or grpc(s)://HOST:PORT "
        "(its gRPC port, 8001 by default); default %(default)s",
    )
    connection.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request")
    connection.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES)
    connection.add_argument("--header", action="append", default=[], help="NAME:VALUE, repeatable")
    connection.add_argument("--preprocess", choices=("server", "client"), default="server")

    images = argparse.ArgumentParser(add_help=False)
    images.add_argument("sources", nargs="+", metavar="PATH_OR_URL", help="image files, folders or URLs")
    images.add_argument("--concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY, help="requests in flight")

    parser = argparse.ArgumentParser(
        prog="beit-client",
        description=__doc__.split("\n")[0],
        epilog="Exit status: 0 all done, 1 an image or the server failed, 2 usage error, 130 interrupted.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", parents=[connection, images], help="top-k labels per image")
    classify.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    classify.add_argument("--json", action="store_true", help="JSON lines instead of tables")
    classify.add_argument(
        "--output", help="append JSON lines here (its folder is created); a rerun skips images already there"
    )
    classify.add_argument(
        "--no-progress", action="store_true", help="no progress bar (shown with --output or piped stdout)"
    )
    embed = commands.add_parser("embed", parents=[connection, images], help="embedding per image")
    embed.add_argument("--output", help="a .npy file; the sources go alongside as .txt, one per row")
    evaluate = commands.add_parser(
        "evaluate",
        parents=[connection],
        help="accuracy on a labeled dataset",
        description="Runs a labeled dataset through the server and measures it: top-1 and top-k accuracy "
        "(multi-class), mAP and micro/macro F1 at a threshold (multi-label); per class, and the most "
        "confused pairs.",
    )
    evaluate.add_argument(
        "data",
        metavar="DATA",
        help="a folder of class folders (DATA/<label or WordNet id>/*.jpg), or a .csv (columns path, label; "
        'several labels joined by |) or .jsonl ({"path": ..., "label": ... or [...]}) file',
    )
    evaluate.add_argument("--top-k", type=int, default=DEFAULT_TOP_K, help="multi-class: top-k accuracy")
    evaluate.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="multi-label: a label is predicted at or above this probability (default %(default)s)",
    )
    evaluate.add_argument(
        "--output",
        help="append each image's result here as a JSON line; a rerun skips images already there. The "
        "report goes beside it (NAME.report.json, NAME.report.png) unless --report/--png say otherwise",
    )
    evaluate.add_argument("--report", help="write the report as JSON here")
    evaluate.add_argument("--png", help="draw the report here (needs matplotlib)")
    evaluate.add_argument(
        "--pairs", type=int, default=DEFAULT_CONFUSED_PAIRS, help="most confused pairs to list"
    )
    evaluate.add_argument(
        "--concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY, help="requests in flight"
    )
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    commands.add_parser("health", parents=[connection], help="is the server live and the model ready")
    commands.add_parser("info", parents=[connection], help="what checkpoint the server runs")
    return parser


def _make_client(args: argparse.Namespace) -> BeitClient:
    return BeitClient(
        args.url,
        timeout=args.timeout,
        max_retries=args.max_retries,
        headers=_headers(args.header),
        preprocess=args.preprocess,
        max_concurrency=getattr(args, "concurrency", DEFAULT_MAX_CONCURRENCY),
    )


_COMMANDS: dict[str, Callable[[BeitClient, argparse.Namespace], int]] = {
    "classify": _classify,
    "embed": _embed,
    "evaluate": _evaluate,
    "health": _health,
    "info": _info,
}


def main(
    argv: Sequence[str] | None = None,
    *,
    make_client: Callable[[argparse.Namespace], BeitClient] = _make_client,
) -> int:
    """Runs one command and returns its exit status; `make_client` lets tests and embedding programs supply
    their own client. Errors are one line on stderr. On Ctrl-C it returns EXIT_INTERRUPTED at once, with
    requests still in flight and the client left open: closing it would wait for them."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        client = make_client(args)
    except (ValueError, argparse.ArgumentTypeError) as e:
        parser.error(str(e))
    try:
        code = _COMMANDS[args.command](client, args)
    except KeyboardInterrupt:
        print("beit-client: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BeitClientError as e:
        client.close()
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    client.close()
    return code


def run() -> None:
    """The `beit-client` program: `main`, then exit. After Ctrl-C the process ends at once, what it wrote
    flushed, instead of waiting for the requests in flight (the interpreter would join their threads)."""
    code = main()
    if code == EXIT_INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
