"""The ceiling: a bare ASGI room broadcaster, no Django and no channel layer.

Run it with `daphne bench.bare_asgi:application`. Sockets on `/ws/chat/<room>/` join an
in-process room; each `{"message": ...}` received is encoded once as
`{"type": "message", "message": ...}` and written to every socket of the room, sender included.
It does the least work a broadcaster can do under daphne, so the gap between it and a Django
target is the cost of Channels, the channel layer and the application.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The project's room-name rule, so every bench room name is valid here too.
_ROOM_PATH = re.compile(r"/ws/chat/([A-Za-z0-9._-]{1,64})/")

rooms: dict[str, set[Send]] = {}


async def application(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """ASGI entry point: WebSockets on room paths; everything else is refused."""
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
    elif scope["type"] == "http":
        await _not_found(receive, send)


async def _websocket(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Serve one socket: join its room on connect, broadcast what it sends, leave on close."""
    match = _ROOM_PATH.fullmatch(scope["path"])
    room: set[Send] | None = None
    try:
        while True:
            event = await receive()
            kind = event["type"]
            if kind == "websocket.connect":
                if match is None:
                    await send({"type": "websocket.close", "code": 1008})
                    return
                room = rooms.setdefault(match.group(1), set())
                room.add(send)
                await send({"type": "websocket.accept"})
            elif kind == "websocket.receive" and room is not None:
                await _broadcast(room, event.get("text"))
            elif kind == "websocket.disconnect":
                return
    finally:
        if room is not None and match is not None:
            room.discard(send)
            if not room:
                rooms.pop(match.group(1), None)


async def _broadcast(room: set[Send], text: str | None) -> None:
    """Encode a posted message once and write it to every socket in the room."""
    if text is None:
        return
    try:
        message = json.loads(text)["message"]
    except (ValueError, KeyError, TypeError):
        return
    event = {"type": "websocket.send", "text": json.dumps({"type": "message", "message": message})}
    # A snapshot: a socket may leave (and the set change) while we are awaiting a send.
    for member in tuple(room):
        await member(event)


async def _not_found(receive: Receive, send: Send) -> None:
    """Answer any HTTP request with 404 (daphne also routes plain HTTP here)."""
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"not found\n"})
