"""The gateway's settings: one frozen object, made by the CLI from its options or by a caller of
`create_app`. Defaults come from `_constants`."""

from __future__ import annotations

from dataclasses import dataclass

from beit_client import ServerURL

from ._constants import (
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
from ._fetch import IPNetwork, UrlPolicy

__all__ = ["GatewaySettings"]


@dataclass(frozen=True)
class GatewaySettings:
    triton_url: str = DEFAULT_TRITON_URL
    """Triton's gRPC endpoint (grpc://HOST:8001; grpcs:// for TLS). http(s):// works too, slower."""
    top_k: int = DEFAULT_TOP_K
    """This deployment's default number of classes per image; a request's top_k overrides it."""
    max_top_k: int = MAX_TOP_K
    api_key: str | None = None
    """When set, /score and /models/{model} require `Authorization: Bearer <api_key>`."""
    max_body_bytes: int = MAX_BODY_BYTES
    max_images: int = MAX_IMAGES
    max_image_bytes: int = MAX_IMAGE_BYTES
    """One image's bytes, however it came: raw body, base64, data: URL, fetched URL."""
    triton_timeout_s: float = TRITON_TIMEOUT_S
    retry_after_s: int = RETRY_AFTER_S
    url_inputs: bool = True
    """Whether images may be given as http(s) URLs at all."""
    url_allow: tuple[IPNetwork, ...] = ()
    url_timeout_s: float = URL_TIMEOUT_S
    url_max_redirects: int = URL_MAX_REDIRECTS

    def __post_init__(self) -> None:
        ServerURL.parse(self.triton_url)
        if not 1 <= self.top_k <= self.max_top_k:
            raise ValueError(f"top_k must be within 1..{self.max_top_k} (max_top_k), got {self.top_k}")
        for name in ("max_body_bytes", "max_images", "max_image_bytes", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("triton_timeout_s", "url_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive seconds, got {getattr(self, name)}")
        if self.url_max_redirects < 0:
            raise ValueError(f"url_max_redirects must be at least 0, got {self.url_max_redirects}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty: leave it unset to serve without one")

    @property
    def url_policy(self) -> UrlPolicy:
        return UrlPolicy(
            timeout_s=self.url_timeout_s,
            max_bytes=self.max_image_bytes,
            max_redirects=self.url_max_redirects,
            allow=self.url_allow,
        )
