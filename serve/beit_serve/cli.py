"""beit-serve: serve a model repository with Triton until SIGINT or SIGTERM, supervised, behind a front
door.

    beit-serve [--repository DIR] [--tritonserver PATH] [access, TLS and limit options]
    beit-serve probe [--url http://127.0.0.1:8000] [--timeout S]

`beit-serve probe` exits 0 only when the server is live, every model is ready and a real classification
through `beit` answers; otherwise it prints one line saying why on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import sys
import threading
from pathlib import Path
from types import FrameType

from beit_repository.names import DEFAULT_REPOSITORY, EMBEDDED_VARIANT
from beit_serve.front_door import FrontDoor, FrontDoorConfig, GrpcTLS, ServingState
from beit_serve.preflight import PreflightError, check_ports_free, check_repository
from beit_serve.server import EmbeddedServer, Restriction
from beit_serve.supervisor import Supervisor

logger = logging.getLogger("beit-serve")

ADMIN_APIS = ("model-repository", "model-config", "statistics", "trace", "logging", "shared-memory")
"""Triton's API groups behind --admin-key: model repository and control, model config, statistics, trace,
logging and shared memory. Health is never restricted, so probes need no key."""
INFERENCE_APIS = ("inference", "metadata")
"""Added behind the same key by --protect-inference."""
DEFAULT_KEY_HEADER = "beit-key"
CONTROL_HEADER = "beit-serve-control"
"""Without --admin-key, model control still needs a key: a random one only beit-serve knows."""
DEFAULT_MAX_INPUT_SIZE = 64 * 2**20
"""Bytes; Triton's own HTTP default since 2.59 (HTTP_DEFAULT_MAX_INPUT_SIZE)."""
ADMIN_KEY_ENV = "BEIT_ADMIN_KEY"


def _env(name: str) -> str | None:
    """An option's default from the environment (docker-compose sets them); empty means unset."""
    return os.environ.get(name) or None


def _env_path(name: str) -> Path | None:
    value = _env(name)
    return Path(value) if value else None


def _env_int(name: str, default: int) -> int:
    value = _env(name)
    return int(value) if value else default


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="beit-serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        "--address", default="0.0.0.0", help="where HTTP and gRPC listen (default %(default)s)"
    )
    parser.add_argument(
        "--model-config-name",
        default=EMBEDDED_VARIANT,
        help="load configs/NAME.pbtxt where a model has one (default: %(default)s, the CPU variant)",
    )
    parser.add_argument(
        "--tritonserver",
        type=Path,
        help="run this tritonserver binary (e.g. /opt/tritonserver/bin/tritonserver in the Triton container) "
        "instead of the nvidia-pytriton wheel's",
    )
    parser.add_argument(
        "--backend-directory",
        type=Path,
        help="Triton's backends for --tritonserver (default: backends/ beside its bin/)",
    )
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for readiness")
    parser.add_argument("--log-verbose", type=int, default=0)
    parser.add_argument(
        "--exit-timeout",
        type=int,
        default=10,
        help="seconds in-flight requests are given to finish on SIGTERM (default %(default)s)",
    )
    access = parser.add_argument_group(
        "access control (Triton's --http-restricted-api, --grpc-restricted-protocol)"
    )
    access.add_argument(
        "--admin-key",
        default=_env(ADMIN_KEY_ENV),
        help=f"requests to the administrative APIs ({', '.join(ADMIN_APIS)}) must carry this key in the "
        f"--key-header header (env {ADMIN_KEY_ENV}, which keeps it off beit-serve's command line)",
    )
    access.add_argument(
        "--protect-inference",
        action="store_true",
        default=(_env("BEIT_PROTECT_INFERENCE") or "").lower() in ("1", "true", "yes"),
        help="inference and metadata need the key too; health stays open (env BEIT_PROTECT_INFERENCE=1)",
    )
    access.add_argument(
        "--key-header",
        default=_env("BEIT_KEY_HEADER") or DEFAULT_KEY_HEADER,
        help="the header (gRPC: metadata key) carrying the key (env BEIT_KEY_HEADER; default %(default)s)",
    )
    tls = parser.add_argument_group("gRPC TLS (HTTPS: a reverse proxy, see deploy/nginx)")
    tls.add_argument(
        "--grpc-tls-cert",
        type=Path,
        default=_env_path("BEIT_GRPC_TLS_CERT"),
        help="PEM server certificate (chain): serve grpcs:// (env BEIT_GRPC_TLS_CERT)",
    )
    tls.add_argument(
        "--grpc-tls-key",
        type=Path,
        default=_env_path("BEIT_GRPC_TLS_KEY"),
        help="PEM private key of --grpc-tls-cert (env BEIT_GRPC_TLS_KEY)",
    )
    tls.add_argument(
        "--grpc-tls-ca",
        type=Path,
        default=_env_path("BEIT_GRPC_TLS_CA"),
        help="PEM CA certificate(s): mutual TLS, clients must present a certificate it signed "
        "(env BEIT_GRPC_TLS_CA)",
    )
    limits = parser.add_argument_group("request size limits")
    limits.add_argument(
        "--http-max-input-size",
        type=int,
        default=_env_int("BEIT_HTTP_MAX_INPUT_SIZE", DEFAULT_MAX_INPUT_SIZE),
        help="largest HTTP request body in bytes, after decompression; larger ones get 413 "
        "(env BEIT_HTTP_MAX_INPUT_SIZE; default %(default)s)",
    )
    limits.add_argument(
        "--grpc-max-input-size",
        type=int,
        default=_env_int("BEIT_GRPC_MAX_INPUT_SIZE", DEFAULT_MAX_INPUT_SIZE),
        help="largest gRPC request message in bytes; larger ones get RESOURCE_EXHAUSTED "
        "(env BEIT_GRPC_MAX_INPUT_SIZE; default %(default)s)",
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _serve_parser()
    args = parser.parse_args(argv)
    if args.protect_inference and not args.admin_key:
        parser.error(f"--protect-inference needs --admin-key (or {ADMIN_KEY_ENV})")
    if (args.grpc_tls_cert is None) != (args.grpc_tls_key is None):
        parser.error("--grpc-tls-cert and --grpc-tls-key go together")
    if args.grpc_tls_ca is not None and args.grpc_tls_cert is None:
        parser.error("--grpc-tls-ca (mutual TLS) needs --grpc-tls-cert and --grpc-tls-key")
    for path in (args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_ca):
        if path is not None and not path.is_file():
            parser.error(f"no such file: {path}")
    if args.http_max_input_size < 1 or args.grpc_max_input_size < 1:
        parser.error("the max input sizes are positive byte counts")
    args.key_header = args.key_header.lower()
    return args


def restrictions(args: argparse.Namespace) -> tuple[tuple[Restriction, ...], dict[str, str]]:
    """Triton's restrictions, and the headers that open model control to the supervisor."""
    if args.admin_key:
        apis = ADMIN_APIS + (INFERENCE_APIS if args.protect_inference else ())
        return (Restriction(apis, args.key_header, args.admin_key),), {args.key_header: args.admin_key}
    control = secrets.token_urlsafe(24)
    return (Restriction(("model-repository",), CONTROL_HEADER, control),), {CONTROL_HEADER: control}


def loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:
        from beit_serve.probe import main as probe_main

        return probe_main(argv[1:])
    args = parse_args(argv)
    try:
        check_repository(args.repository, args.model_config_name)
        ports = {"http-port": args.http_port, "grpc-port": args.grpc_port, "metrics-port": args.metrics_port}
        check_ports_free(args.address, ports)
    except PreflightError as error:
        print(f"beit-serve: error: {error}", file=sys.stderr)
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    triton_restrictions, admin_headers = restrictions(args)
    upstream_http, upstream_grpc = loopback_port(), loopback_port()
    server = EmbeddedServer(
        args.repository,
        http_port=upstream_http,
        grpc_port=upstream_grpc,
        metrics_port=args.metrics_port,
        model_config_name=args.model_config_name,
        log_verbose=args.log_verbose,
        exit_timeout=args.exit_timeout,
        tritonserver=args.tritonserver,
        backend_directory=args.backend_directory,
        address="127.0.0.1",
        # Prometheus scrapes Triton's metrics directly, where the front door listens.
        metrics_address=args.address,
        model_control="explicit",
        restrictions=triton_restrictions,
    )
    state = ServingState()
    tls = GrpcTLS(args.grpc_tls_cert, args.grpc_tls_key, args.grpc_tls_ca) if args.grpc_tls_cert else None
    front_door = FrontDoor(
        FrontDoorConfig(
            address=args.address,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            upstream_http_port=upstream_http,
            upstream_grpc_port=upstream_grpc,
            http_max_input_size=args.http_max_input_size,
            grpc_max_input_size=args.grpc_max_input_size,
            grpc_tls=tls,
            keys=triton_restrictions,
        ),
        state,
    )
    supervisor = Supervisor(
        server, state, admin_headers, ready_timeout=args.ready_timeout, drain_timeout=args.exit_timeout
    )

    # The handler only records the signal: draining and stopping wait on other threads and processes,
    # which must not happen inside a handler that may have interrupted another wait.
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received: draining, then shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        front_door.start()
    except OSError as error:
        logger.error("the front door cannot listen: %s", error)
        return 1
    try:
        return supervisor.run(stop_requested)
    finally:
        front_door.stop()
