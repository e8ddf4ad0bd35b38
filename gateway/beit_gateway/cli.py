"""beit-gateway: Azure ML and Hugging Face compatible REST endpoints in front of Triton, served by uvicorn
until SIGINT or SIGTERM (in-flight requests finish first)."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence

from ._constants import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_TOP_K,
    DEFAULT_TRITON_URL,
    MAX_BODY_BYTES,
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    MAX_TOP_K,
    RETRY_AFTER_S,
    TRITON_TIMEOUT_S,
    URL_MAX_REDIRECTS,
    URL_TIMEOUT_S,
)
from ._fetch import IPNetwork
from ._settings import GatewaySettings

API_KEY_ENV = "BEIT_GATEWAY_API_KEY"
GRACEFUL_SHUTDOWN_S = 30


def _network(value: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an IP address or CIDR network: {value!r}") from e


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="beit-gateway", description=__doc__)
    parser.add_argument(
        "--triton-url", default=DEFAULT_TRITON_URL, help="Triton's gRPC URL (default %(default)s)"
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port to listen on (default %(default)s)"
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=DEFAULT_TOP_K,
        help="classes per image unless a request says (default %(default)s)",
    )
    parser.add_argument(
        "--max-top-k",
        type=int,
        default=MAX_TOP_K,
        help="most classes a request may ask for (default %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get(API_KEY_ENV) or None,
        help=f"require Authorization: Bearer KEY on /score and /models/* (default: ${API_KEY_ENV}; "
        "none when unset)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=MAX_BODY_BYTES,
        help="larger bodies get 413 (default %(default)s)",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=MAX_IMAGES,
        help="images per request, more get 413 (default %(default)s)",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=MAX_IMAGE_BYTES,
        help="one image's size, decoded or fetched (default %(default)s)",
    )
    parser.add_argument(
        "--triton-timeout-s",
        type=float,
        default=TRITON_TIMEOUT_S,
        help="seconds per Triton request; past it the answer is 504 (default %(default)s)",
    )
    parser.add_argument(
        "--retry-after-s",
        type=int,
        default=RETRY_AFTER_S,
        help="Retry-After of a 503 when Triton is unavailable (default %(default)s)",
    )
    parser.add_argument(
        "--url-allow",
        type=_network,
        action="append",
        default=[],
        metavar="CIDR",
        help="a non-public network image URLs may be fetched from anyway (repeatable; cloud metadata "
        "addresses stay refused)",
    )
    parser.add_argument(
        "--no-url-inputs", action="store_true", help="refuse images given as http(s) URLs altogether"
    )
    parser.add_argument(
        "--url-timeout-s",
        type=float,
        default=URL_TIMEOUT_S,
        help="seconds to fetch one image URL, redirects included (default %(default)s)",
    )
    parser.add_argument(
        "--url-max-redirects",
        type=int,
        default=URL_MAX_REDIRECTS,
        help="redirects followed per image URL (default %(default)s)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    try:
        args.settings = GatewaySettings(
            triton_url=args.triton_url,
            top_k=args.top_k,
            max_top_k=args.max_top_k,
            api_key=args.api_key,
            max_body_bytes=args.max_body_bytes,
            max_images=args.max_images,
            max_image_bytes=args.max_image_bytes,
            triton_timeout_s=args.triton_timeout_s,
            retry_after_s=args.retry_after_s,
            url_inputs=not args.no_url_inputs,
            url_allow=tuple(args.url_allow),
            url_timeout_s=args.url_timeout_s,
            url_max_redirects=args.url_max_redirects,
        )
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import uvicorn

    from ._app import create_app
    from ._logging import uvicorn_log_config

    uvicorn.run(
        create_app(args.settings),
        host=args.host,
        port=args.port,
        log_config=uvicorn_log_config(args.log_level),
        access_log=False,
        http="httptools",
        # The default asyncio loop: grpc.aio (the SDK's async gRPC client) runs on it.
        loop="asyncio",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return 0
