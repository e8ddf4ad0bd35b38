"""beit-serve probe: is this server able to classify an image right now?

Exit 0 only when the server is live, every model of the repository is ready, and a real classification
through the `beit` ensemble answers; otherwise one line on stderr says why, and the exit code is 1. The
docker-compose health check and the Kubernetes probes run it: Triton's own readiness says nothing of a
Python-backend stub that died (server#8604), a real request does. Standard library and Pillow only.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request

from beit_repository.names import CLASSIFY_MODEL, IMAGE, MODELS, PROBABILITIES

KEY_ENV = "BEIT_ADMIN_KEY"


class ProbeFailed(Exception):
    pass


def _probe_image() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 90, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def _call(url: str, headers: dict[str, str], deadline: float, body: bytes | None = None) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise ProbeFailed(f"timed out before {url}")
    request = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=remaining) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()
        raise ProbeFailed(f"{url}: HTTP {error.code} {detail}") from error
    except (urllib.error.URLError, OSError) as error:
        raise ProbeFailed(f"{url}: {getattr(error, 'reason', error)}") from error


def probe(url: str, timeout: float, headers: dict[str, str]) -> str:
    """What answered, or ProbeFailed saying what did not."""
    deadline = time.monotonic() + timeout
    base = url.rstrip("/")
    _call(f"{base}/v2/health/live", {}, deadline)
    for model in MODELS:
        _call(f"{base}/v2/models/{model}/ready", headers, deadline)
    request = {
        "inputs": [
            {
                "name": IMAGE,
                "shape": [1, 1],
                "datatype": "BYTES",
                "data": [base64.b64encode(_probe_image()).decode()],
            }
        ],
        "outputs": [{"name": PROBABILITIES, "parameters": {"classification": 1}}],
    }
    answer = _call(
        f"{base}/v2/models/{CLASSIFY_MODEL}/infer",
        {**headers, "Content-Type": "application/json"},
        deadline,
        json.dumps(request).encode(),
    )
    try:
        top = json.loads(answer)["outputs"][0]["data"][0]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise ProbeFailed(f"{CLASSIFY_MODEL} answered something unreadable: {answer[:200]!r}") from error
    return str(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="beit-serve probe", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's HTTP URL (%(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for the whole probe")
    parser.add_argument(
        "--key",
        default=os.environ.get(KEY_ENV),
        help=f"the access key, for a server run with --protect-inference (env {KEY_ENV})",
    )
    parser.add_argument("--key-header", default="beit-key", help="its header (%(default)s)")
    args = parser.parse_args(argv)
    headers = {args.key_header: args.key} if args.key else {}
    try:
        top = probe(args.url, args.timeout, headers)
    except ProbeFailed as error:
        print(f"not ready: {error}", file=sys.stderr)
        return 1
    print(f"ready: {CLASSIFY_MODEL} answered {top}")
    return 0
