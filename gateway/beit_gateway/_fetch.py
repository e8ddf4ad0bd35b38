"""Fetching image URLs without letting a caller reach what only the gateway can reach (SSRF).

- Schemes: http and https only.
- Addresses: every address a host name resolves to must be public. Private (RFC 1918, unique local),
  loopback, link-local, carrier-grade NAT, multicast, reserved and unspecified addresses are refused, and so
  are IPv6 addresses that embed one (IPv4-mapped, 6to4, Teredo, NAT64). `UrlPolicy.allow` lists networks
  that may be fetched anyway (an internal image store, a test server). Cloud metadata endpoints
  (`METADATA_ADDRESSES`, 169.254.169.254 and its kin) are refused even when allowed.
- Pinning: the connection goes to the address that was checked, not to a second lookup of the name (which
  a hostile DNS server could answer differently: DNS rebinding). The request still carries the name, as
  its Host header and, over TLS, as the SNI name the certificate is checked against.
- Redirects are followed by hand, at most `max_redirects`, each hop checked as the first one was.
- Limits: `timeout_s` for the whole fetch (lookups, connections, redirects, body) and `max_bytes` of body,
  checked against Content-Length before reading and counted while reading. Proxies from the environment are
  ignored: they would connect to names the gateway never checked.

Every failure is that image's `ImageError` with its index and the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from ._errors import ImageError

__all__ = [
    "METADATA_ADDRESSES",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "SystemResolver",
    "UrlFetcher",
    "UrlPolicy",
    "refusal",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud instance metadata
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_USER_AGENT = "beit-gateway"


@dataclass(frozen=True)
class UrlPolicy:
    timeout_s: float
    max_bytes: int
    max_redirects: int
    allow: tuple[IPNetwork, ...] = ()
    """Networks fetched even though they are not public; metadata addresses stay refused."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    embedded = [address.sixtofour] if address.sixtofour else []
    if address.teredo:
        embedded.extend(address.teredo)
    if address in _NAT64:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return embedded


def _category(address: IPAddress) -> str | None:
    """Why `address` is not a public one, or None when it is."""
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast:
        return "a multicast address"
    if not address.is_global:
        return "not a public address"
    return None


def _refused_as(address: IPAddress, allow: Sequence[IPNetwork]) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if any(address in network for network in allow):
        return None
    return _category(address)


def refusal(address: IPAddress, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why the gateway will not connect to `address`, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    why = _refused_as(address, allow)
    if why is not None:
        return f"{address} is {why}"
    if isinstance(address, ipaddress.IPv6Address) and not any(address in network for network in allow):
        for inner in _embedded_ipv4(address):
            why = _refused_as(inner, allow)
            if why is not None:
                return f"{address} embeds {inner}, {why}"
    return None


class Resolver(Protocol):
    async def resolve(self, host: str, port: int) -> list[IPAddress]: ...


class SystemResolver:
    """The operating system's resolver (getaddrinfo), run off the event loop."""

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        # The scope of a link-local IPv6 address ("fe80::1%eth0") does not change its category.
        return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


class UrlFetcher:
    def __init__(self, policy: UrlPolicy, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self._resolver = resolver or SystemResolver()
        # trust_env=False: no proxies from the environment, which would connect to unchecked names.
        self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=policy.timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, index: int) -> bytes:
        """The body of `url`, image `index` of its request, under the policy; else that image's error."""
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._follow(url, index)
        except TimeoutError as e:
            raise ImageError(
                index, "url_timeout", f"fetching {url} took longer than {self.policy.timeout_s:g} s"
            ) from e
        except httpx.HTTPError as e:
            raise ImageError(
                index, "url_fetch_failed", f"fetching {url} failed: {e or type(e).__name__}"
            ) from e

    async def _follow(self, url: str, index: int) -> bytes:
        current = _parse(url, index)
        for _redirect in range(self.policy.max_redirects + 1):
            request = await self._pinned_request(current, index)
            response = await self._client.send(request, stream=True)
            try:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    current = _parse(str(current.join(location)), index)
                    continue
                if response.status_code != 200:
                    raise ImageError(
                        index, "url_fetch_failed", f"{current} answered HTTP {response.status_code}"
                    )
                return await self._read_body(response, current, index)
            finally:
                await response.aclose()
        raise ImageError(
            index, "url_fetch_failed", f"{url} redirects more than {self.policy.max_redirects} times"
        )

    async def _pinned_request(self, url: httpx.URL, index: int) -> httpx.Request:
        host = url.raw_host.decode("ascii")
        try:
            addresses = await self._resolver.resolve(host, _port(url))
        except OSError as e:
            raise ImageError(index, "url_fetch_failed", f"cannot resolve {host}: {e}") from e
        if not addresses:
            raise ImageError(index, "url_fetch_failed", f"{host} resolves to no address")
        for address in addresses:
            why = refusal(address, self.policy.allow)
            if why is not None:
                named = "" if host == str(address) else f"{host} resolves to "
                raise ImageError(
                    index,
                    "url_refused",
                    f"refused to fetch {url}: {named}{why}; the gateway fetches public addresses only "
                    "(an operator can allow networks with --url-allow)",
                )
        headers = {"Host": url.netloc.decode("ascii"), "Accept": "image/*", "User-Agent": _USER_AGENT}
        extensions = {"sni_hostname": host} if url.scheme == "https" else {}
        return self._client.build_request(
            "GET", url.copy_with(host=str(addresses[0])), headers=headers, extensions=extensions
        )

    async def _read_body(self, response: httpx.Response, url: httpx.URL, index: int) -> bytes:
        limit = self.policy.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ImageError(
                index, "image_too_large", f"{url} declares {declared} bytes, over the limit of {limit}"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise ImageError(
                    index, "image_too_large", f"{url} sends more than the limit of {limit} bytes"
                )
            chunks.append(chunk)
        if not size:
            raise ImageError(index, "empty_image", f"{url} answered an empty body")
        return b"".join(chunks)


def _parse(url: str, index: int) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise ImageError(index, "invalid_url", f"not a valid URL: {e}") from e
    if parsed.scheme not in ("http", "https"):
        raise ImageError(
            index,
            "unsupported_url_scheme",
            f"{url}: only http and https URLs are fetched, not {parsed.scheme!r}",
        )
    if not parsed.host:
        raise ImageError(index, "invalid_url", f"{url} names no host")
    return parsed


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)
