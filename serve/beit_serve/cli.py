"""beit-serve: serve a model repository with the embedded Triton server until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from beit_repository.names import DEFAULT_REPOSITORY, EMBEDDED_VARIANT
from beit_serve.server import EmbeddedServer, ServerStartError

logger = logging.getLogger("beit-serve")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="beit-serve", description=__doc__)
    parser.add_argument(
        "--repository",
        type=Path,
        default=Path(DEFAULT_REPOSITORY),
        help="the model repository beit-build wrote (default %(default)s)",
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument(
        "--model-config-name",
        default=EMBEDDED_VARIANT,
        help="load configs/NAME.pbtxt where a model has one (default: %(default)s, the CPU variant)",
    )
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for readiness")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument(
        "--exit-timeout", type=int, default=10, help="seconds Triton drains in-flight requests on shutdown"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = EmbeddedServer(
        args.repository,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        model_config_name=args.model_config_name,
        log_verbose=args.log_verbose,
        exit_timeout=args.exit_timeout,
    )

    # The handler only records the signal: stopping waits on the Triton process, which must not happen
    # inside a handler that may have interrupted another wait on it.
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received: shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    server.start()
    try:
        server.wait_until_ready(args.ready_timeout)
        while not stop_requested.wait(0.5):
            if server.returncode is not None:
                logger.error("Triton exited with code %s", server.returncode)
                return 1
        return 0
    except ServerStartError as error:
        logger.error("%s", error)
        return 1
    finally:
        server.stop()
