"""Every default of the SDK. The model repository's names come from `beit_repository.names`."""

from __future__ import annotations

from typing import Literal

DEFAULT_TOP_K = 5
DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
"""Triton's default ports. A URL without a port takes its protocol's; an error from a URL whose scheme does
not match the default port it names (http:// to 8001) suggests the right one."""
DEFAULT_TIMEOUT = 60.0
"""Seconds for one request, connecting included."""
DEFAULT_MAX_CONCURRENCY = 4
"""Requests in flight at once per classify/embed call; the server batches across them."""
DEFAULT_MAX_BATCH_SIZE = 8
"""Images per request when the model config declares no batching limit (max_batch_size 0)."""
DEFAULT_PREPROCESS: Literal["server"] = "server"
"""Send encoded images to the server's ensemble, which computes the pixels."""

DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
RETRY_JITTER = 0.25
"""Each backoff delay is shortened by a random fraction up to this, so clients that failed together retry
apart."""

DEFAULT_IMAGE_ENCODING: Literal["png"] = "png"
"""Lossless, so client-encoded arrays reach the model exactly as given."""
DEFAULT_JPEG_QUALITY = 95

MAX_HTTP_CLIENTS_PER_THREAD = 4
"""tritonclient's HTTP client takes its timeout when it is made and is not thread safe, so each thread keeps
one per timeout it used lately; beyond this many, the least recently used is closed."""

URL_FETCH_TIMEOUT = 30.0
MAX_URL_IMAGE_BYTES = 32 * 1024 * 1024
"""An image URL answering more than this is refused instead of read into memory."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
"""Files the CLI picks up when it walks a folder."""

DEFAULT_THRESHOLD = 0.5
"""Multi-label evaluation: a label counts as predicted when its probability is at least this."""
DEFAULT_CONFUSED_PAIRS = 10
"""How many of the most confused (true, predicted) class pairs an evaluation report lists."""
