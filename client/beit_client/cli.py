"""`beit-client`: classify or embed images with the served model, check its health, show what it serves.

    beit-client classify cat.jpg photos/ https://example.com/dog.png [--top-k 5] [--json]
    beit-client classify photos/ --output results.jsonl   # batch job: progress bar, resumable
    beit-client embed photos/ --output emb.npy             # writes emb.npy and emb.txt (one source a row)
    beit-client health
    beit-client info

Exit status: 0 when every image succeeded, 1 when any failed (listed on stderr; the rest are still written),
2 for usage errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from ._client import BeitClient
from ._constants import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_TOP_K,
    IMAGE_EXTENSIONS,
)
from ._exceptions import BeitClientError
from ._models import Prediction

__all__ = ["BatchReport", "classify_to_file", "collect_sources", "completed_sources", "main"]

DEFAULT_URL = "http://localhost:8000"
_URL_PREFIXES = ("http://", "https://")


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


@dataclass
class BatchReport:
    written: int = 0
    skipped: int = 0
    failures: list[tuple[str, BeitClientError]] = field(default_factory=list)


def _prediction_dicts(predictions: list[Prediction]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(prediction) for prediction in predictions]


def _groups(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def classify_to_file(
    client: BeitClient,
    sources: Sequence[str],
    output: Path,
    *,
    top_k: int = DEFAULT_TOP_K,
    concurrency: int = DEFAULT_MAX_CONCURRENCY,
    progress: bool = True,
) -> BatchReport:
    """Classifies `sources` into JSON lines `{"source", "predictions"}`, appending each line as soon as its
    request completes. Sources already in `output` are skipped, so a rerun after an interruption finishes
    the job with every image written exactly once; failed images are not written and are retried by a rerun.
    """
    done = completed_sources(output)
    pending = [source for source in dict.fromkeys(sources) if source not in done]
    report = BatchReport(skipped=len(sources) - len(pending))
    if not pending:
        return report
    group_size = client.model_info().max_batch_size or 1
    with (
        output.open("a", encoding="utf-8") as file,
        tqdm(total=len(pending), unit="img", disable=not progress) as bar,
        ThreadPoolExecutor(concurrency, thread_name_prefix="beit-batch") as pool,
    ):
        futures: dict[Future[list[Any]], list[str]] = {
            pool.submit(client.classify, group, top_k, return_exceptions=True): group
            for group in _groups(pending, group_size)
        }
        for future in as_completed(futures):
            group = futures[future]
            for source, outcome in zip(group, future.result(), strict=True):
                if isinstance(outcome, BeitClientError):
                    report.failures.append((source, outcome))
                    continue
                line = {"source": source, "predictions": _prediction_dicts(outcome)}
                file.write(json.dumps(line, ensure_ascii=False) + "\n")
                report.written += 1
            file.flush()
            bar.update(len(group))
    return report


def _print_table(source: str, predictions: list[Prediction], out: IO[str]) -> None:
    print(source, file=out)
    print(f"  {'score':>8}  {'index':>6}  label", file=out)
    for prediction in predictions:
        print(f"  {prediction.score:8.4f}  {prediction.index:6d}  {prediction.label}", file=out)


def _report_failures(failures: Sequence[tuple[str, BeitClientError]]) -> int:
    for source, error in failures:
        print(f"failed: {source}: {error}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} image(s) failed", file=sys.stderr)
        return 1
    return 0


def _classify(client: BeitClient, args: argparse.Namespace) -> int:
    sources = collect_sources(args.sources)
    if args.output is not None:
        report = classify_to_file(
            client,
            sources,
            Path(args.output),
            top_k=args.top_k,
            concurrency=args.concurrency,
            progress=not args.no_progress,
        )
        print(f"{report.written} written, {report.skipped} already done", file=sys.stderr)
        return _report_failures(report.failures)
    outcomes = client.classify(sources, args.top_k, return_exceptions=True)
    failures = []
    for source, outcome in zip(sources, outcomes, strict=True):
        if isinstance(outcome, BeitClientError):
            failures.append((source, outcome))
        elif args.json:
            print(
                json.dumps({"source": source, "predictions": _prediction_dicts(outcome)}, ensure_ascii=False)
            )
        else:
            _print_table(source, outcome, sys.stdout)
    return _report_failures(failures)


def _embed(client: BeitClient, args: argparse.Namespace) -> int:
    sources = collect_sources(args.sources)
    outcomes = client.embed(sources, return_exceptions=True)
    failures = [(s, o) for s, o in zip(sources, outcomes, strict=True) if isinstance(o, BeitClientError)]
    succeeded = [(s, o) for s, o in zip(sources, outcomes, strict=True) if not isinstance(o, BeitClientError)]
    if args.output is None:
        for source, vector in succeeded:
            print(json.dumps({"source": source, "embedding": vector.tolist()}))
        return _report_failures(failures)
    output = Path(args.output)
    vectors = np.stack([vector for _, vector in succeeded]) if succeeded else np.empty((0, 0), np.float32)
    np.save(output, vectors)
    # Row i of the array belongs to line i of the list.
    sources_file = output.with_suffix(".txt")
    sources_file.write_text("".join(f"{source}\n" for source, _ in succeeded), encoding="utf-8")
    print(
        f"{len(succeeded)} embeddings {vectors.shape} -> {output}, sources -> {sources_file}", file=sys.stderr
    )
    return _report_failures(failures)


def _health(client: BeitClient, args: argparse.Namespace) -> int:
    live, ready = client.live(), client.ready()
    print(f"server: {client.url}\nlive: {live}\nready: {ready}")
    return 0 if live and ready else 1


def _info(client: BeitClient, args: argparse.Namespace) -> int:
    info = dataclasses.asdict(client.model_info())
    print(json.dumps(info, indent=2))
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
    connection.add_argument("--url", default=DEFAULT_URL, help="http(s):// or grpc(s):// server URL")
    connection.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per request")
    connection.add_argument("--max-retries", type=int, default=DEFAULT_MAX_RETRIES)
    connection.add_argument("--header", action="append", default=[], help="NAME:VALUE, repeatable")
    connection.add_argument("--preprocess", choices=("server", "client"), default="server")

    images = argparse.ArgumentParser(add_help=False)
    images.add_argument("sources", nargs="+", metavar="PATH_OR_URL", help="image files, folders or URLs")
    images.add_argument("--concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY, help="requests in flight")

    parser = argparse.ArgumentParser(prog="beit-client", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    classify = commands.add_parser("classify", parents=[connection, images], help="top-k labels per image")
    classify.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    classify.add_argument("--json", action="store_true", help="JSON lines instead of tables")
    classify.add_argument("--output", help="append JSON lines here; a rerun skips images already there")
    classify.add_argument("--no-progress", action="store_true", help="no progress bar with --output")
    embed = commands.add_parser("embed", parents=[connection, images], help="embedding per image")
    embed.add_argument("--output", help="a .npy file; the sources go alongside as .txt, one per row")
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
    "health": _health,
    "info": _info,
}


def main(
    argv: Sequence[str] | None = None,
    *,
    make_client: Callable[[argparse.Namespace], BeitClient] = _make_client,
) -> int:
    """Runs one command; `make_client` lets tests and embedding programs supply their own client."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        client = make_client(args)
    except (ValueError, argparse.ArgumentTypeError) as e:
        parser.error(str(e))
    with client:
        try:
            return _COMMANDS[args.command](client, args)
        except BeitClientError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
