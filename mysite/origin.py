"""The WebSocket Origin check: a handshake proceeds only from a page of this site.

A browser sends the Origin of the page that opens a socket (scheme, host and port), and sends
the site's cookies whatever that page is; comparing the Origin with the site's own origins is
what stops another site's page from chatting as our visitor. channels' host-only check lets
`https://HOST:4443`, `ws://HOST` and `chrome-extension://HOST` through; this one does not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# Under `chat`: the logger operators already configure (CHAT_LOG_LEVEL).
logger = logging.getLogger("chat.origin")

# In DEBUG, runserver and test servers listen on any loopback port, and their pages are ours.
DEBUG_LOOPBACK_ORIGIN = re.compile(r"http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?")


def header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of one request header in an ASGI scope, in order."""
    return [value.decode("latin1") for key, value in scope.get("headers", ()) if key == name]


def page_scheme(scope: Scope) -> str:
    """`http` or `https`: the scheme of a page on this host, decided as Django decides it."""
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header:
        meta_name, secure_value = proxy_header
        # Django's META name (HTTP_X_FORWARDED_PROTO) back to the header (x-forwarded-proto).
        name = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin1")
        values = header_values(scope, name)
        if values:
            return "https" if values[0].split(",", 1)[0].strip() == secure_value else "http"
    # daphne leaves `scheme` out of a WebSocket scope; ASGI's default is ws.
    return "https" if scope.get("scheme") == "wss" else "http"


def host_allowed(host: str) -> bool:
    """Whether a Host header names this site, by Django's ALLOWED_HOSTS rule."""
    domain, _port = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # what Django's get_host() allows
    return bool(domain) and validate_host(domain, allowed)


def trusted(origin: str) -> bool:
    """Whether an origin is in CSRF_TRUSTED_ORIGINS, wildcards matched as Django's CSRF does."""
    for pattern in settings.CSRF_TRUSTED_ORIGINS:
        if "*" not in pattern:
            if origin == pattern:
                return True
            continue
        wanted, parsed = urlsplit(pattern), urlsplit(origin)
        if parsed.scheme == wanted.scheme and is_same_domain(
            parsed.netloc, wanted.netloc.lstrip("*")
        ):
            return True
    return False


def origin_allowed(origin: str, *, scheme: str, host: str | None) -> bool:
    """Whether a handshake's Origin is one of the site's, given the page scheme and Host."""
    # Same-origin: the page was served from this very scheme://Host, and the Host is ours
    # (without that, a DNS-rebinding page would be "same-origin" with itself).
    if host is not None and origin == f"{scheme}://{host}" and host_allowed(host):
        return True
    if trusted(origin):
        return True
    return settings.DEBUG and DEBUG_LOOPBACK_ORIGIN.fullmatch(origin) is not None


def handshake_allowed(scope: Scope) -> bool:
    """Whether a WebSocket scope carries exactly one Origin, and it is the site's."""
    origins = header_values(scope, b"origin")
    hosts = header_values(scope, b"host")
    # A browser sends one of each; anything else is not a page of ours.
    if len(origins) != 1:
        return False
    return origin_allowed(
        origins[0], scheme=page_scheme(scope), host=hosts[0] if len(hosts) == 1 else None
    )


def refuse_origin(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    """Refuse a handshake whose Origin is not the site's (HTTP 403), and log it."""
    logger.info("WebSocket handshake refused: Origin %.200r", header_values(scope, b"origin"))
    return WebsocketDenier()(scope, receive, send)
