"""The HTTPS reverse proxy (deploy/nginx/nginx.conf, the compose `https` service) and the access, TLS and size
options in docker-compose.yml, checked without nginx or Docker: nginx is not installed here, so its config is
parsed by crossplane (NGINX Inc.'s parser: syntax, each directive's context and argument count, unknown
directives refused) and its settings read from the parse. beit-serve's own handling of the same options is
tested live in test_security.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crossplane
import pytest

from beit_serve.cli import DEFAULT_MAX_INPUT_SIZE, parse_args
from tests import compose

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"


def parse(path: Path) -> dict[str, Any]:
    return dict(crossplane.parse(str(path), check_ctx=True, check_args=True, strict=True))


def directives(block: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Every `name` directive under `block`, at any depth."""
    found = []
    for directive in block:
        if directive["directive"] == name:
            found.append(directive)
        found += directives(directive.get("block", []), name)
    return found


@pytest.fixture(scope="module")
def nginx() -> list[dict[str, Any]]:
    result = parse(NGINX_CONF)
    assert result["status"] == "ok", result["errors"]
    return list(result["config"][0]["parsed"])


def test_the_checker_refuses_what_nginx_refuses(tmp_path: Path) -> None:
    for text in (
        "http { server { listen 8443 ssl; }",  # unbalanced
        "http { client_max_body_size 1m 2m; }",  # argument count
        "http { server { location / { worker_processes 2; } } }",  # context
        "http { proxy_pas http://beit; }",  # unknown directive
    ):
        conf = tmp_path / "nginx.conf"
        conf.write_text(text)
        assert parse(conf)["status"] == "failed", text


def test_nginx_terminates_tls_on_8443_with_the_mounted_certificate(nginx: list[dict[str, Any]]) -> None:
    (listen,) = directives(nginx, "listen")
    assert listen["args"] == ["8443", "ssl"]
    assert directives(nginx, "ssl_certificate")[0]["args"] == ["/etc/nginx/tls/server.crt"]
    assert directives(nginx, "ssl_certificate_key")[0]["args"] == ["/etc/nginx/tls/server.key"]
    assert directives(nginx, "ssl_protocols")[0]["args"] == ["TLSv1.2", "TLSv1.3"]


def test_nginx_proxies_to_triton_http_and_refuses_bodies_over_beit_serves_limit(
    nginx: list[dict[str, Any]],
) -> None:
    (upstream,) = directives(nginx, "upstream")
    assert [d["args"] for d in directives(upstream["block"], "server")] == [["triton:8000"]]
    assert directives(nginx, "proxy_pass")[0]["args"] == ["http://beit"]
    (limit,) = directives(nginx, "client_max_body_size")
    assert limit["args"] == ["64m"] and 64 * 2**20 == DEFAULT_MAX_INPUT_SIZE
    # A 503 (drain, reload) goes back to the client, whose SDK retries it; nginx does not resend the body.
    assert directives(nginx, "proxy_next_upstream")[0]["args"] == ["off"]


def test_compose_runs_nginx_on_its_own_profile_with_the_config_and_certificates_read_only() -> None:
    services = compose.load(ROOT / "docker-compose.yml", {})["services"]
    https = services["https"]
    assert https["profiles"] == ["https"] and https["image"].startswith("nginx:")
    assert https["depends_on"] == {"triton": {"condition": "service_healthy"}}
    mounts = compose.mounts(https, ROOT)
    assert (
        mounts["/etc/nginx/nginx.conf"].source == str(NGINX_CONF)
        and mounts["/etc/nginx/nginx.conf"].read_only
    )
    assert (
        mounts["/etc/nginx/tls"].source == str(ROOT / "deploy" / "tls") and mounts["/etc/nginx/tls"].read_only
    )
    assert compose.published_ports(https) == {8443}


def test_compose_hands_beit_serve_its_access_tls_and_size_options(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "BEIT_ADMIN_KEY": "k",
        "BEIT_PROTECT_INFERENCE": "1",
        "BEIT_GRPC_TLS_CERT": "/etc/beit/tls/server.crt",
        "BEIT_GRPC_TLS_KEY": "/etc/beit/tls/server.key",
        "TLS_DIR": "/srv/tls",
    }
    triton = compose.load(ROOT / "docker-compose.yml", env)["services"]["triton"]
    environment = triton["environment"]
    assert compose.mounts(triton, ROOT)["/etc/beit/tls"].source == "/srv/tls"
    # beit-serve reads the same variables as its options' defaults.
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(Path, "is_file", lambda self: True)  # the certificates exist in the container
    args = parse_args([])
    assert (args.admin_key, args.protect_inference, args.key_header) == ("k", True, "beit-key")
    assert (str(args.grpc_tls_cert), str(args.grpc_tls_key), args.grpc_tls_ca) == (
        "/etc/beit/tls/server.crt",
        "/etc/beit/tls/server.key",
        None,
    )
    assert args.http_max_input_size == args.grpc_max_input_size == DEFAULT_MAX_INPUT_SIZE


def test_with_nothing_set_compose_leaves_every_option_at_beit_serves_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = compose.load(ROOT / "docker-compose.yml", {})["services"]["triton"]["environment"]
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    args = parse_args([])
    assert args.admin_key is None and not args.protect_inference and args.grpc_tls_cert is None
    assert args.http_max_input_size == DEFAULT_MAX_INPUT_SIZE
