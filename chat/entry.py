"""A WebSocket handshake from daphne to its consumer, with no coroutine per socket but the
consumer's.

Channels composes an application of `async` layers (ProtocolTypeRouter, an Origin validator,
CookieMiddleware, SessionMiddleware, AuthMiddleware, URLRouter), each awaiting the next: every
open socket holds each layer's suspended frame and most of them a copy of its scope, about
6 KB per idle connection, a fifth of what one cost (docs/benchmarks.md, "Idle memory").
Here each step is a plain call on daphne's own scope, and the consumer's coroutine is returned
for the server to run:

1. the Origin check (mysite/origin.py): another site's page is refused with HTTP 403;
2. the cookies and session (chat/auth.py); the user is resolved in the consumer's `connect`;
3. the route, from chat/routing.py's `websocket_urlpatterns` as URLRouter matches them
   (`url_route` in the scope); a path no pattern takes reaches RefuseConsumer (HTTP 403).

mysite/asgi.py puts `Entry` outermost, and HTTP goes to Django as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.urls.exceptions import Resolver404

from chat.auth import read_session_cookie
from chat.routing import websocket_urlpatterns
from mysite.origin import handshake_allowed, refuse_origin

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class Entry:
    """The ASGI application: WebSockets as above, HTTP to `http`."""

    # A plain (not async) __call__ would pass for an ASGI 2 application without this hint.
    _asgi_single_callable = True

    def __init__(self, http: ASGIApp) -> None:
        self.http = http

    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        kind = scope["type"]
        if kind == "http":
            return self.http(scope, receive, send)
        if kind != "websocket":
            raise ValueError(f"No application configured for scope type {kind!r}")
        if not handshake_allowed(scope):
            return refuse_origin(scope, receive, send)
        read_session_cookie(scope)
        return route(scope)(scope, receive, send)


def route(scope: Scope) -> ASGIApp:
    """The consumer for the scope's path, with `url_route` set in place, as URLRouter sets it."""
    path = scope["path"]
    root_path = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    path = path.lstrip("/")
    for pattern in websocket_urlpatterns:
        try:
            match = pattern.pattern.match(path)
        except Resolver404:
            continue
        if match:
            _, args, kwargs = match
            scope["url_route"] = {"args": args, "kwargs": {**kwargs, **pattern.default_args}}
            return pattern.callback
    raise ValueError(f"No route found for path {path!r}.")
