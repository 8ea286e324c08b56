"""The WebSocket Origin check: scheme, host and port must be one of the site's own origins."""

from __future__ import annotations

import base64
import os
import socket
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from chat.testing.server import DaphneServer
from mysite.asgi import application
from mysite.origin import origin_allowed

HOST = "chat.example.com"
SITE = f"https://{HOST}"


@pytest.fixture
def behind_nginx(settings: Any) -> None:
    """Production as docs/deployment.md sets it up: TLS at nginx, DJANGO_HTTPS=1."""
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = [HOST]
    settings.CSRF_TRUSTED_ORIGINS = [SITE]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


async def handshake(*headers: tuple[str, str], scheme: str | None = None) -> bool:
    """Open /ws/chat/lobby/ through the whole ASGI stack; True if accepted."""
    communicator = WebsocketCommunicator(
        application,
        "/ws/chat/lobby/",
        headers=[(name.encode(), value.encode()) for name, value in headers],
    )
    if scheme is not None:
        communicator.scope["scheme"] = scheme
    # Refused means closed before accept, which daphne answers with HTTP 403.
    connected, _ = await communicator.connect()
    if connected:
        await communicator.disconnect()
    else:
        await communicator.wait()
    return connected


NGINX = (("host", HOST), ("x-forwarded-proto", "https"))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("behind_nginx")
@pytest.mark.parametrize("layer", ["memory"], indirect=True)
async def test_the_site_origin_is_accepted(layer: str) -> None:
    assert await handshake(*NGINX, ("origin", SITE))


@pytest.mark.usefixtures("behind_nginx")
@pytest.mark.parametrize(
    "origin",
    [
        pytest.param([f"https://{HOST}:4443"], id="other-port"),
        pytest.param([f"http://{HOST}"], id="plain-http"),
        pytest.param([f"ws://{HOST}"], id="ws-scheme"),
        pytest.param([f"wss://{HOST}"], id="wss-scheme"),
        pytest.param([f"chrome-extension://{HOST}"], id="extension"),
        pytest.param(["https://evil.example"], id="wrong-host"),
        pytest.param([f"https://{HOST}.evil.example"], id="lookalike"),
        pytest.param([f"https://evil.{HOST}"], id="subdomain"),
        pytest.param(["null"], id="null"),
        pytest.param([""], id="empty"),
        pytest.param([], id="missing"),
        pytest.param([SITE, "https://evil.example"], id="two-origins"),
    ],
)
async def test_any_other_origin_is_refused(origin: list[str]) -> None:
    assert not await handshake(*NGINX, *(("origin", value) for value in origin))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("behind_nginx")
@pytest.mark.parametrize("layer", ["memory"], indirect=True)
async def test_same_origin_needs_no_trusted_list(settings: Any, layer: str) -> None:
    settings.CSRF_TRUSTED_ORIGINS = []
    assert await handshake(*NGINX, ("origin", SITE))
    # Without the proxy's word the handshake came over plain HTTP, so an https page is foreign.
    assert not await handshake(("host", HOST), ("origin", SITE))
    # TLS straight to the server (no proxy) is wss in the scope.
    assert await handshake(("host", HOST), ("origin", SITE), scheme="wss")


@pytest.mark.usefixtures("behind_nginx")
async def test_same_origin_needs_an_allowed_host(settings: Any) -> None:
    # A DNS-rebinding page is "same-origin" with itself: its host is not ours.
    settings.ALLOWED_HOSTS = [HOST]
    assert not await handshake(
        ("host", "evil.example"), ("x-forwarded-proto", "https"), ("origin", "https://evil.example")
    )


def test_same_origin_compares_the_port(settings: Any) -> None:
    """What the test servers rely on: daphne on a random port, DJANGO_DEBUG=0, no HTTPS."""
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
    settings.CSRF_TRUSTED_ORIGINS = ["http://127.0.0.1", "http://localhost"]
    settings.SECURE_PROXY_SSL_HEADER = None
    host = "127.0.0.1:8123"
    assert origin_allowed("http://127.0.0.1:8123", scheme="http", host=host)
    assert not origin_allowed("http://127.0.0.1:8124", scheme="http", host=host)
    assert not origin_allowed("https://127.0.0.1:8123", scheme="http", host=host)
    assert not origin_allowed("http://127.0.0.1:8123", scheme="http", host=None)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://a.example.org", True),
        ("https://example.org", True),  # ".example.org" in ALLOWED_HOSTS includes it
        ("http://a.example.org", False),
        ("https://a.example.org:8443", False),
        ("https://evilexample.org", False),
    ],
)
def test_wildcard_trusted_origins_match_as_csrf_does(
    settings: Any, origin: str, allowed: bool
) -> None:
    settings.DEBUG = False
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.org"]
    assert origin_allowed(origin, scheme="https", host=None) is allowed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:5173", True),
        ("http://127.0.0.1:8000", True),
        ("http://[::1]:8000", True),
        ("http://localhost", True),
        ("https://localhost:5173", False),
        ("http://localhost.evil.example:8000", False),
        ("http://localhost:8000/path", False),
        ("http://localhost:port", False),
    ],
)
def test_debug_allows_loopback_pages_on_any_port(settings: Any, origin: str, allowed: bool) -> None:
    settings.CSRF_TRUSTED_ORIGINS = []
    settings.DEBUG = True
    assert origin_allowed(origin, scheme="http", host=None) is allowed
    settings.DEBUG = False
    assert not origin_allowed(origin, scheme="http", host=None)


def handshake_status(port: int, origin: str) -> int:
    """The HTTP status daphne answers a WebSocket handshake with."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        "GET /ws/chat/lobby/ HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: {origin}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        status_line = sock.makefile("rb").readline()
    return int(status_line.split()[1])


@pytest.mark.redis
def test_daphne_answers_a_refused_handshake_with_403(server: DaphneServer) -> None:
    assert handshake_status(server.port, server.http_url) == 101
    assert handshake_status(server.port, f"https://127.0.0.1:{server.port}") == 403
    assert handshake_status(server.port, f"http://127.0.0.1:{server.port + 1}") == 403
