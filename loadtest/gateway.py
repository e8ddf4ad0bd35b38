"""One classification through beit-gateway, in each of the forms its callers send, for the Locust user and the
gateway benchmark alike."""

from __future__ import annotations

import base64
import json
from typing import Literal

import httpx

GatewayForm = Literal["hf-raw", "hf-json", "azure"]
GATEWAY_FORMS: tuple[GatewayForm, ...] = ("hf-raw", "hf-json", "azure")
"""hf-raw: the image file as the body of POST /models/beit (what huggingface_hub sends without parameters);
hf-json: {"inputs": base64, "parameters": {"top_k": k}}; azure: POST /score {"input_data": [base64], ...}."""
DEFAULT_GATEWAY_PORT = 8080


class GatewayRequestError(Exception):
    """The gateway answered something other than 200; `status_code` says what."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"HTTP {status_code}: {body[:300]}")
        self.status_code = status_code


def classify_via_gateway(client: httpx.Client, form: GatewayForm, image: bytes, top_k: int) -> int:
    """Classifies `image`; returns the answer's size in bytes, raises `GatewayRequestError` on a non-200."""
    if form == "hf-raw":
        # Without parameters a raw body takes the deployment's top k, as on the Hugging Face API.
        response = client.post(
            "/models/beit", content=image, headers={"Content-Type": "application/octet-stream"}
        )
    else:
        encoded = base64.b64encode(image).decode("ascii")
        if form == "hf-json":
            body: dict[str, object] = {"inputs": encoded, "parameters": {"top_k": top_k}}
            path = "/models/beit"
        else:
            body = {"input_data": [encoded], "parameters": {"top_k": top_k}}
            path = "/score"
        response = client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
    if response.status_code != 200:
        raise GatewayRequestError(response.status_code, response.text)
    return len(response.content)
