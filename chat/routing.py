"""WebSocket routes: valid room names reach the chat consumer, anything else is refused."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from channels.consumer import AsyncConsumer
from django.urls import path, re_path

import chat.rooms  # noqa: F401  (registers the <room:...> converter)
from chat.consumers import ChatConsumer, RefuseConsumer


class ConsumerApp:
    """`consumer_class.as_asgi()`, without a coroutine of its own.

    A new consumer per socket, as `as_asgi` makes; but its coroutine is returned for the
    server to run rather than awaited inside another, which every open socket would hold
    (chat/entry.py says why that matters).
    """

    # A plain (not async) __call__ would pass for an ASGI 2 application without this hint.
    _asgi_single_callable = True

    def __init__(self, consumer_class: type[AsyncConsumer]) -> None:
        self.consumer_class = consumer_class

    def __call__(self, scope: Any, receive: Any, send: Any) -> Awaitable[None]:
        return self.consumer_class()(scope, receive, send)


# Django's stubs type path()'s view as an HTTP view; Channels routes ASGI applications with it.
websocket_urlpatterns = [
    path("ws/chat/<room:room_name>/", ConsumerApp(ChatConsumer)),  # type: ignore[arg-type]
    # A handshake to any other path is refused (HTTP 403), never answered with a 500.
    re_path(r"", ConsumerApp(RefuseConsumer)),  # type: ignore[arg-type]
]
