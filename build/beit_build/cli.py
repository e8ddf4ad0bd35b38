"""`beit-build`: turn a checkpoint into the Triton model repository's artifacts.

beit-build [--model ID_OR_FOLDER | --random SIZE] [--repository DIR] [--labels FILE] [--external-data]
           [--quantize int8]
beit-build check-engine --repository DIR [--engine onnx|cuda|tensorrt] [--model ...] [IMAGE ...]
beit-build check-engine --repository DIR --int8 [IMAGE_OR_FOLDER ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from beit_build.build import build_repository, is_built
from beit_build.check_engine import ENGINES, check_engine
from beit_build.errors import BuildError
from beit_build.quantize import QUANTIZATIONS
from beit_build.random_checkpoint import RANDOM_ARCHITECTURES, random_checkpoint_name
from beit_repository.names import DEFAULT_REPOSITORY

DEFAULT_CHECKPOINT = "microsoft/beit-base-patch16-224-pt22k-ft22k"
CHECK_ENGINE = "check-engine"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beit-build", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--model", default=None, help=f"hub id or local checkpoint folder (default {DEFAULT_CHECKPOINT})"
    )
    source.add_argument(
        "--random",
        choices=list(RANDOM_ARCHITECTURES),
        help="a randomly initialized checkpoint of this size, at the real architecture",
    )
    _add_repository(parser)
    parser.add_argument("--labels", type=Path, help="class names, one per line, one line per output")
    parser.add_argument(
        "--external-data",
        action="store_true",
        help="store the weights in a data file beside model.onnx (always done above protobuf's 2 GiB)",
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        help="also write model.int8.onnx, served by beit-serve --model-config-name embedded_int8 "
        "(check it on your images first: beit-build check-engine --int8 IMAGES)",
    )
    parser.add_argument(
        "--skip-if-built",
        action="store_true",
        help="do nothing when the repository already holds a complete build of this checkpoint",
    )
    return parser


def _check_engine_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"beit-build {CHECK_ENGINE}",
        description="Compare the repository's model.onnx on an ONNX Runtime engine with PyTorch, or with "
        "--int8 its model.int8.onnx with model.onnx: top-1 and top-5 agreement and max |delta probability|.",
    )
    _add_repository(parser)
    parser.add_argument("--engine", choices=list(ENGINES), default="onnx")
    parser.add_argument(
        "--model", help="PyTorch reference (default: the checkpoint the repository was built from)"
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="compare model.int8.onnx (beit-build --quantize int8) with the fp32 model.onnx instead",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="synthetic images when no IMAGE is given")
    parser.add_argument(
        "images", nargs="*", type=Path, metavar="IMAGE", help="image files, or folders walked for them"
    )
    return parser


def _add_repository(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path(DEFAULT_REPOSITORY),
        help="the built model repository to write or check (default %(default)s)",
    )


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if argv[:1] == [CHECK_ENGINE]:
            _check_engine(_check_engine_parser().parse_args(argv[1:]))
        else:
            _build(_build_parser().parse_args(argv))
    except BuildError as e:
        print(f"beit-build: error: {e}", file=sys.stderr)
        raise SystemExit(1) from e


def _build(args: argparse.Namespace) -> None:
    model = None if args.random else (args.model or DEFAULT_CHECKPOINT)
    name = random_checkpoint_name(args.random) if args.random else str(model)
    if args.skip_if_built and args.labels is None and is_built(args.repository, name, quantize=args.quantize):
        print(f"{args.repository} already holds {name}; not rebuilding (drop --skip-if-built to force)")
        return
    result = build_repository(
        model,
        args.repository,
        labels=args.labels,
        random_size=args.random,
        external_data=args.external_data,
        quantize=args.quantize,
    )
    print(f"wrote {result.onnx_path} ({result.onnx_nodes} nodes, {result.num_labels} labels)")
    for path in result.model_files:
        print(f"  {path.name}: {path.stat().st_size / 1e6:.1f} MB")
    for name, difference in result.max_abs_diff.items():
        print(f"max |ONNX - PyTorch| {name}: {difference:.3g}")
    if result.int8_onnx_path is not None:
        print(f"wrote {result.int8_onnx_path}; compare it with fp32 on your own images before serving it:")
        print(f"  beit-build check-engine --repository {result.repository} --int8 IMAGE_FOLDER")


def _check_engine(args: argparse.Namespace) -> None:
    result = check_engine(
        args.repository,
        engine=args.engine,
        model=args.model,
        images=args.images,
        batch_size=args.batch_size,
        int8=args.int8,
    )
    model = "model.int8.onnx" if args.int8 else "model.onnx"
    print(
        f"{model} on {result.engine} ({', '.join(result.providers)}) against {result.reference}, "
        f"{result.images} images:"
    )
    print(f"top-1 agreement {result.top1_agreement:.1%}, top-5 agreement {result.top5_agreement:.1%}")
    print(f"max |delta probability| {result.max_abs_probability_diff:.3g}")
    print(f"{result.reference}'s mean top-1 probability {result.reference_mean_top1:.3f}")


if __name__ == "__main__":
    main()
