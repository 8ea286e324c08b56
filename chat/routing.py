"""WebSocket routes: valid room names reach the chat consumer, anything else is refused."""

from django.urls import path, re_path

import chat.rooms  # noqa: F401  (registers the <room:...> converter)
from chat.consumers import ChatConsumer, RefuseConsumer

websocket_urlpatterns = [
    path("ws/chat/<room:room_name>/", ChatConsumer.as_asgi()),
    # A handshake to any other path is refused (HTTP 403), never answered with a 500.
    re_path(r"", RefuseConsumer.as_asgi()),
]
