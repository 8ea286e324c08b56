"""The limit: a room broadcaster on picows (a WebSocket server written in C) on uvloop.

Run it with `python -m bench.picows_broadcaster --port PORT`. It speaks what bench/bare_asgi.py
speaks (sockets on `/ws/chat/<room>/` join an in-process room; each `{"message": ...}` received
is encoded once as `{"type": "message", "message": ...}` and written to every socket of the
room, sender included; Origin ignored), with no Django, no ASGI and no storage. The WebSocket
framing, the event loop and the socket writes are C, so what it costs per delivery is about the
least a Python broadcaster can cost: the reference the project's per-post work is held to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Sequence

import uvloop
from picows import (
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    ws_create_server,
)

# The project's room-name rule, as in bench/bare_asgi.py.
_ROOM_PATH = re.compile(rb"/ws/chat/([A-Za-z0-9._-]{1,64})/")


def room_of(path: bytes) -> str | None:
    """The room a socket's request path names, or None if it names none."""
    match = _ROOM_PATH.fullmatch(path)
    return match.group(1).decode() if match else None


def broadcast_payload(text: str) -> bytes | None:
    """The frame every member receives for a posted text, or None if it posts no message."""
    try:
        message = json.loads(text)["message"]
    except (ValueError, KeyError, TypeError):
        return None
    return json.dumps({"type": "message", "message": message}).encode()


class Rooms:
    """Room name → the transports in it; a room is dropped when its last socket leaves."""

    def __init__(self) -> None:
        self._members: dict[str, set[WSTransport]] = {}

    def join(self, room: str, transport: WSTransport) -> set[WSTransport]:
        """Add a socket to a room; return the room's members (the set itself, kept current)."""
        members = self._members.setdefault(room, set())
        members.add(transport)
        return members

    def leave(self, room: str, transport: WSTransport) -> None:
        """Remove a socket from its room."""
        members = self._members.get(room)
        if members is None:
            return
        members.discard(transport)
        if not members:
            del self._members[room]

    def __len__(self) -> int:
        return len(self._members)


class RoomListener(WSListener):
    """One socket: joins its room when connected, broadcasts each text frame, leaves on close."""

    def __init__(self, rooms: Rooms, room: str) -> None:
        super().__init__()
        self.rooms = rooms
        self.room = room
        self.members: set[WSTransport] = set()

    def on_ws_connected(self, transport: WSTransport) -> None:
        """Join the room."""
        self.members = self.rooms.join(self.room, transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """Broadcast a posted message to the whole room; answer a close frame."""
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            payload = broadcast_payload(frame.get_payload_as_utf8_text())
            if payload is not None:
                # Sends are synchronous (into each transport's buffer): the set cannot change
                # under the loop.
                for member in self.members:
                    member.send(WSMsgType.TEXT, payload)
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        """Leave the room."""
        self.rooms.leave(self.room, transport)


async def serve(host: str, port: int, rooms: Rooms | None = None) -> asyncio.Server:
    """Start listening; requests for any other path than a room's are answered 404."""
    shared = rooms if rooms is not None else Rooms()

    def route(request: WSUpgradeRequest) -> RoomListener | None:
        room = room_of(request.path)
        return None if room is None else RoomListener(shared, room)

    server: asyncio.Server = await ws_create_server(route, host, port)
    return server


async def _main(host: str, port: int) -> None:
    server = await serve(host, port)
    await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until killed (bench/processes.py stops it with SIGTERM)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(_main(args.host, args.port))


if __name__ == "__main__":
    main()
