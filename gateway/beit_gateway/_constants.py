"""Every default of the gateway, in one place. `GatewaySettings` and the `beit-gateway` options take theirs
from here."""

from __future__ import annotations

DEFAULT_PORT = 8080
DEFAULT_HOST = "0.0.0.0"
"""All interfaces, as Triton itself listens; give --host 127.0.0.1 to keep it on the machine."""
DEFAULT_TRITON_URL = "grpc://localhost:8001"

DEFAULT_TOP_K = 5
"""Classes answered per image when neither the request nor the deployment (--top-k) says otherwise."""
MAX_TOP_K = 1000
"""The most classes a request may ask for; larger asks are refused (400) rather than answered slowly."""

MAX_BODY_BYTES = 32 * 1024 * 1024
"""A request body over this is refused with 413, before it is read in full."""
MAX_IMAGES = 64
"""Images in one Azure ML request; more are refused with 413."""
MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""One decoded image (base64, data: URL or fetched URL) over this is that image's 400."""

TRITON_TIMEOUT_S = 30.0
"""Seconds for one Triton request; past it the gateway answers 504."""
TRITON_RETRIES = 0
"""Retries of a transient Triton failure inside one gateway request. None by default: the caller gets 503 with
Retry-After at once and decides itself."""
RETRY_AFTER_S = 5
"""The Retry-After a 503 carries."""
READY_CACHE_S = 1.0
"""How long a /ready answer is reused, so that probes do not each cost three Triton calls."""

URL_TIMEOUT_S = 10.0
"""Seconds for fetching one image URL: resolving, connecting, every redirect and the whole body."""
URL_MAX_REDIRECTS = 3
URL_MAX_CONCURRENCY = 8
"""Image URLs being fetched at once, all requests together."""

LOGGER_NAME = "beit_gateway"
