"""python -m loadtest.benchmark --model random-base|CHECKPOINT --out results/ [--url http://HOST:8000]

Runs every measurement in one process on one machine, prints the table with the targets' PASS/FAIL
lines, and writes OUT/benchmark.json, OUT/throughput.png, OUT/latency.png, OUT/cpu.png and OUT/int8.png.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from beit_preprocessing import preprocess_bytes
from beit_repository.names import PREPROCESS_MODEL
from loadtest.benchmark import baselines, int8, preprocessing, report, serving
from loadtest.benchmark.artifacts import Artifacts, prepare
from loadtest.benchmark.report import PER_CORE_LAYOUT
from loadtest.benchmark.repository import (
    model_parameters,
    preprocessing_config,
    with_preprocessor,
    without_dynamic_batching,
)
from loadtest.benchmark.servers import Server, embedded_server
from loadtest.benchmark.timing import Measurement
from loadtest.corpus import PHOTO_SIZE, photo_corpus, synthetic_corpus
from loadtest.urls import url_for_protocol

logger = logging.getLogger("loadtest.benchmark")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.benchmark", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="random-base", help="random-SIZE (beit-build --random sizes), or a checkpoint"
    )
    parser.add_argument("--out", type=Path, default=Path("results"), help="Folder for JSON, plots, artifacts")
    parser.add_argument(
        "--url",
        default="",
        help="Measure this running server (HTTP URL; it must serve --model) instead of starting one; "
        "only its own batching setting is measured then",
    )
    parser.add_argument("--grpc-url", default="", help="gRPC URL of --url's server (default: its port 8001)")
    parser.add_argument("--duration-s", type=float, default=15.0, help="Measured seconds per point")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="Unmeasured seconds before each point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--ort-batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--protocols", nargs="+", choices=["http", "grpc"], default=["http", "grpc"])
    parser.add_argument("--skip-pipeline", action="store_true", help="Leave out the HF pipeline baseline")
    parser.add_argument("--skip-no-batching", action="store_true", help="Leave out the batching-off server")
    parser.add_argument(
        "--skip-int8", action="store_true", help="Leave out int8 vs fp32 (loadtest/benchmark/int8.py)"
    )
    parser.add_argument("--int8-concurrency", type=int, default=8, help="Clients in flight for int8 vs fp32")
    parser.add_argument("--corpus-size", type=int, default=32, help="Images in each generated corpus")
    parser.add_argument(
        "--overhead-rounds",
        type=int,
        default=3,
        help="Rounds of in-process then served windows for CPU per image (the median is judged)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    artifacts = prepare(args.model, args.out / "artifacts")
    results, points = run(args, artifacts)
    targets = report.evaluate_targets(results, points)
    results["targets"] = [asdict(t) for t in targets]
    if "overhead_per_image" in results:
        results["overhead_per_image"]["ratios"] = report.overhead_per_image(results)
    report.write_json(args.out / "benchmark.json", results)
    plots = report.plot(args.out, results, points)
    print(report.table(results, points, targets))
    print(f"\nwrote {args.out / 'benchmark.json'}, {', '.join(str(p) for p in plots)}")
    return 0


def run(args: argparse.Namespace, artifacts: Artifacts) -> tuple[dict[str, Any], list[serving.ServedPoint]]:
    timing = {"duration_s": args.duration_s, "warmup_s": args.warmup_s}
    # Served requests carry the mixed-size corpus; per-image preprocessing costs are quoted on VGA photos.
    mixed = synthetic_corpus(args.corpus_size)
    photos = photo_corpus(args.corpus_size)
    exact, max_pixels = preprocessing_config(artifacts.repository, "exact")
    fast, _ = preprocessing_config(artifacts.repository, "fast")
    results: dict[str, Any] = {
        "environment": report.environment(artifacts.name, url=args.url or None, **timing)
    }

    logger.info("in-process baselines")
    if not args.skip_pipeline:
        results["hf_pipeline"] = asdict(baselines.hf_pipeline(artifacts.checkpoint, mixed, **timing))
    pixels = [preprocess_bytes(image, exact, max_pixels=max_pixels) for image in mixed[:8]]
    batches = baselines.onnx_batches(artifacts.onnx_model, pixels, args.ort_batch_sizes, **timing)
    results["onnxruntime"] = {
        "batches": [asdict(m) for m in batches],
        "best": asdict(max(batches, key=lambda m: m.images_per_s)),
        "end_to_end_batch_1": asdict(
            baselines.onnx_end_to_end(artifacts.onnx_model, mixed, exact, max_pixels=max_pixels, **timing)
        ),
    }
    # Filled where the server's CPU time can be read (_measure_server).
    results["overhead_per_image"] = {"rounds": []}

    logger.info("preprocessing in-process")
    results["preprocessing"] = {
        "image_size": f"{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}",
        "in_process": {
            mode: asdict(preprocessing.in_process(photos, config, max_pixels=max_pixels, **timing))
            for mode, config in (("exact", exact), ("fast", fast))
        },
        "stages_ms": preprocessing.stage_costs(photos, exact, max_pixels=max_pixels),
        "fast_vs_exact": preprocessing.fast_mode_deviation(
            photos, exact, fast, baselines.onnx_session(artifacts.onnx_model), max_pixels=max_pixels
        ),
        "served": {},
    }

    def in_process_window() -> Measurement:
        # One image per call on one thread, on the photos the served windows carry: one process per core's
        # share, with this process's CPU time.
        return baselines.onnx_end_to_end(
            artifacts.onnx_model, photos, exact, max_pixels=max_pixels, threads=1, **timing
        )

    points: list[serving.ServedPoint] = []
    measure = functools.partial(
        _measure_server, args, in_process_window, photos=photos, mixed=mixed, results=results, points=points
    )
    if args.url:
        # A server elsewhere: its CPU time cannot be read from here.
        remote = Server(
            {
                "http": url_for_protocol(args.url, "http"),
                "grpc": args.grpc_url or url_for_protocol(args.url, "grpc"),
            }
        )
        measure(remote, dynamic_batching=True, label="as deployed")
    else:
        deployed_mode = model_parameters(artifacts.repository, PREPROCESS_MODEL).get("mode", "exact")
        with embedded_server(artifacts.repository) as server:
            measure(server, dynamic_batching=True, label=f"{deployed_mode}, as deployed")
        # Each mode once more as single-threaded processes, the cheapest layout per image, one per core but
        # the one the load generator needs: oversubscribed, the server's CPU time per image would grow
        # with context switches. Layout and mode are read when the model loads: a server for each.
        instances = max(1, preprocessing.available_cores() - 1)
        for mode in ("exact", "fast"):
            variant = with_preprocessor(
                artifacts.repository,
                args.out / "artifacts" / f"{mode}-per-core",
                mode=mode,
                instances=instances,
            )
            with embedded_server(variant) as server:
                results["preprocessing"]["served"][f"{mode}, {PER_CORE_LAYOUT}"] = asdict(
                    _served_preprocessing(server, photos, timing)
                )
        if not args.skip_no_batching:
            no_batching = without_dynamic_batching(
                artifacts.repository, args.out / "artifacts" / "no-batching"
            )
            with embedded_server(no_batching) as server:
                measure(server, dynamic_batching=False, label=None)
        if not args.skip_int8:
            results["int8"] = int8.compare(
                artifacts.repository,
                args.out / "artifacts",
                images=mixed,
                batch_sizes=args.ort_batch_sizes,
                concurrency=args.int8_concurrency,
                protocol="grpc" if "grpc" in args.protocols else args.protocols[0],
                agreement_photos=int8.AGREEMENT_PHOTOS,
                **timing,
            )
    results["serving"] = [
        {"protocol": p.protocol, "dynamic_batching": p.dynamic_batching, **asdict(p.measurement)}
        for p in points
    ]
    results["triton_statistics"] = [
        {
            "protocol": p.protocol,
            "dynamic_batching": p.dynamic_batching,
            "concurrency": p.measurement.concurrency,
            "models": p.statistics,
        }
        for p in points
    ]
    return results, points


def _measure_server(
    args: argparse.Namespace,
    in_process_window: Callable[[], Measurement],
    server: Server,
    photos: list[bytes],
    mixed: list[bytes],
    results: dict[str, Any],
    points: list[serving.ServedPoint],
    *,
    dynamic_batching: bool,
    label: str | None,
) -> None:
    timing = {"duration_s": args.duration_s, "warmup_s": args.warmup_s}
    if label is not None:
        logger.info("served preprocessing (%s)", label)
        results["preprocessing"]["served"][label] = asdict(_served_preprocessing(server, photos, timing))
    if label is not None and server.cpu_seconds is not None:
        results["overhead_per_image"]["rounds"] = _cpu_per_image_rounds(
            args, in_process_window, server, photos
        )
    for protocol in args.protocols:
        logger.info("served beit over %s, dynamic batching %s", protocol, "on" if dynamic_batching else "off")
        points.extend(
            serving.sweep(
                server.urls[protocol],
                protocol,
                mixed,
                args.concurrency,
                dynamic_batching=dynamic_batching,
                statistics_url=server.urls["http"],
                cpu_clock=server.cpu_seconds,
                **timing,
            )
        )


def _cpu_per_image_rounds(
    args: argparse.Namespace,
    in_process_window: Callable[[], Measurement],
    server: Server,
    photos: list[bytes],
) -> list[dict[str, Any]]:
    """In-process and served windows in turn, so that a drift in this machine's speed (often 10-20% over a
    run) moves both sides of a round alike; the server idles through each in-process window."""
    timing = {"duration_s": args.duration_s, "warmup_s": args.warmup_s}
    rounds = []
    for number in range(1, args.overhead_rounds + 1):
        logger.info("CPU per image, round %d of %d", number, args.overhead_rounds)
        in_process = in_process_window()
        served = [
            {"protocol": p.protocol, **asdict(p.measurement)}
            for protocol in args.protocols
            for p in serving.sweep(
                server.urls[protocol],
                protocol,
                photos,
                [report.OVERHEAD_CONCURRENCY],
                dynamic_batching=True,
                statistics_url=server.urls["http"],
                cpu_clock=server.cpu_seconds,
                **timing,
            )
        ]
        rounds.append({"in_process": asdict(in_process), "served": served})
    return rounds


def _served_preprocessing(server: Server, photos: list[bytes], timing: dict[str, float]) -> Measurement:
    # Enough requests in flight to keep every core's decoder busy, batched as the dynamic batcher would.
    cores = preprocessing.available_cores()
    return preprocessing.served(
        server.urls["http"],
        photos,
        batch_size=4,
        concurrency=max(2, cores),
        cpu_clock=server.cpu_seconds,
        **timing,
    )


if __name__ == "__main__":
    sys.exit(main())
