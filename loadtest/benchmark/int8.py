"""int8 against fp32 on one machine in one run (issue 14): ONNX Runtime in-process, the served `beit`
ensemble under the `embedded` and `embedded_int8` variants, and top-1 agreement on the photo corpus with a
confident tiny checkpoint.

    python -m loadtest.benchmark.int8 --model random-base --out results/int8

`make bench` runs the same comparison as part of the full benchmark; this entry point runs it alone (about
3 minutes with BEiT-base on 2 cores, plus the first build and quantization).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from beit_build import build_repository
from beit_build.check_engine import check_engine
from beit_build.quantize import quantize_int8
from beit_build.random_checkpoint import save_random_checkpoint
from beit_build.repository import INT8_ONNX_PATH, atomic_path
from beit_preprocessing import preprocess_bytes
from beit_repository.names import EMBEDDED_VARIANT, INT8_VARIANT
from loadtest.benchmark import baselines, report, serving
from loadtest.benchmark.artifacts import prepare
from loadtest.benchmark.repository import onnx_model, preprocessing_config
from loadtest.benchmark.servers import embedded_server
from loadtest.corpus import photo_corpus, synthetic_corpus

logger = logging.getLogger("loadtest.benchmark")

PRECISIONS = {"fp32": EMBEDDED_VARIANT, "int8": INT8_VARIANT}
"""Each precision and the config variant that serves it."""
CONFIDENT_HEAD_SCALE = 100.0
"""A random head (weights ~ N(0, 0.02²)) gives near-uniform probabilities, whose top-1 flips on any noise,
so agreement on it measures nothing. Scaled by 100 (the head tests/checkpoints.py draws, N(0, 2²)) the logits
spread and the fp32 top-1 is a clear winner, as a trained classifier's usually is. Still random features:
a proxy for a trained checkpoint, never a substitute (README "int8 on CPU")."""
AGREEMENT_PHOTOS = 256


def compare(
    repository: Path,
    workdir: Path,
    *,
    images: Sequence[bytes],
    batch_sizes: Sequence[int],
    concurrency: int,
    protocol: str,
    agreement_photos: int,
    duration_s: float,
    warmup_s: float,
) -> dict[str, Any]:
    """The int8 section of benchmark.json: `repository`'s fp32 and int8 models (quantized here when the
    build did not), in-process per batch size and served at `concurrency` over `protocol`."""
    timing = {"duration_s": duration_s, "warmup_s": warmup_s}
    models = {"fp32": onnx_model(repository), "int8": ensure_int8(repository)}
    exact, max_pixels = preprocessing_config(repository, "exact")
    pixels = [preprocess_bytes(image, exact, max_pixels=max_pixels) for image in images[:8]]
    in_process = {}
    for precision, path in models.items():
        logger.info("%s in-process, batch sizes %s", precision, list(batch_sizes))
        in_process[precision] = [
            asdict(m) for m in baselines.onnx_batches(path, pixels, batch_sizes, **timing)
        ]
    served = {}
    for precision, variant in PRECISIONS.items():
        with embedded_server(repository, variant) as server:
            logger.info("%s served (%s), %s at concurrency %d", precision, variant, protocol, concurrency)
            (point,) = serving.sweep(
                server.urls[protocol],
                protocol,
                images,
                [concurrency],
                dynamic_batching=True,
                statistics_url=server.urls["http"],
                duration_s=duration_s,
                warmup_s=warmup_s,
            )
            served[precision] = asdict(point.measurement)
    return {
        "protocol": protocol,
        "in_process": in_process,
        "served": served,
        "agreement": confident_agreement(workdir / "confident-tiny", agreement_photos),
    }


def ensure_int8(repository: Path) -> Path:
    """model.int8.onnx of the repository, made from its model.onnx if the build was not asked for it."""
    path = repository / INT8_ONNX_PATH
    if not path.exists():
        logger.info("quantizing %s to int8", onnx_model(repository))
        with atomic_path(path) as temporary:
            quantize_int8(onnx_model(repository), temporary)
    return path


def confident_agreement(workdir: Path, photos: int) -> dict[str, Any]:
    """check-engine --int8 on `photos` photos of the corpus, with a confident tiny checkpoint built with
    --quantize int8 (once per workdir)."""
    checkpoint, repository, folder = workdir / "checkpoint", workdir / "repository", workdir / "photos"
    if not (repository / INT8_ONNX_PATH).exists():
        save_confident_tiny_checkpoint(checkpoint)
        build_repository(checkpoint, repository, quantize="int8")
    folder.mkdir(parents=True, exist_ok=True)
    for index, photo in enumerate(photo_corpus(photos)):
        (folder / f"photo-{index:04d}.jpg").write_bytes(photo)
    result = check_engine(repository, int8=True, images=[folder])
    return {"checkpoint": f"random tiny, head x{CONFIDENT_HEAD_SCALE:g}", **asdict(result)}


def save_confident_tiny_checkpoint(directory: Path) -> Path:
    """beit-build's random tiny BEiT with its classifier head scaled by CONFIDENT_HEAD_SCALE."""
    import torch
    from transformers import BeitForImageClassification

    save_random_checkpoint("tiny", directory)
    model = BeitForImageClassification.from_pretrained(directory)
    with torch.no_grad():
        for parameter in model.get_submodule("classifier").parameters():
            parameter.mul_(CONFIDENT_HEAD_SCALE)
    model.save_pretrained(directory)
    return directory


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.benchmark.int8", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--model", default="random-base", help="random-tiny|random-base|random-large, or a checkpoint"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results/int8"), help="Folder for JSON, plot, artifacts"
    )
    parser.add_argument("--duration-s", type=float, default=15.0, help="Measured seconds per point")
    parser.add_argument("--warmup-s", type=float, default=3.0, help="Unmeasured seconds before each point")
    parser.add_argument("--concurrency", type=int, default=8, help="Clients in flight against each server")
    parser.add_argument("--ort-batch-sizes", type=int, nargs="+", default=[4])
    parser.add_argument("--protocol", choices=["http", "grpc"], default="grpc")
    parser.add_argument("--corpus-size", type=int, default=32, help="Images in the served corpus")
    parser.add_argument("--agreement-photos", type=int, default=AGREEMENT_PHOTOS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_arguments(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    artifacts = prepare(args.model, args.out / "artifacts")
    results: dict[str, Any] = {
        "environment": report.environment(artifacts.name, duration_s=args.duration_s, warmup_s=args.warmup_s),
        "int8": compare(
            artifacts.repository,
            args.out / "artifacts",
            images=synthetic_corpus(args.corpus_size),
            batch_sizes=args.ort_batch_sizes,
            concurrency=args.concurrency,
            protocol=args.protocol,
            agreement_photos=args.agreement_photos,
            duration_s=args.duration_s,
            warmup_s=args.warmup_s,
        ),
    }
    targets = report.int8_targets(results["int8"])
    results["targets"] = [asdict(t) for t in targets]
    report.write_json(args.out / "int8.json", results)
    plot = report.plot_int8(args.out, results["int8"])
    env = results["environment"]
    print(f"BEiT int8 vs fp32: {env['model']} on {env['cores']} cores, {env['duration_s']:g} s per point")
    print("\n".join([report.HEADER, *report.int8_lines(results["int8"]), "-- targets"]))
    print("\n".join(t.line() for t in targets))
    print(f"\nwrote {args.out / 'int8.json'}, {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
