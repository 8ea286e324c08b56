"""The picows reference speaks what the load client expects of the bare-ASGI ceiling."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bench.picows_broadcaster import Rooms, broadcast_payload, room_of, serve
from bench.processes import HOST


def test_a_room_path_names_its_room_and_nothing_else_does() -> None:
    """The project's room-name rule, as in bench/bare_asgi.py."""
    assert room_of(b"/ws/chat/bench_ab12_0/") == "bench_ab12_0"
    assert room_of(b"/ws/chat/a.b-c/") == "a.b-c"
    assert room_of(b"/ws/chat/") is None
    assert room_of(b"/ws/chat/x/y/") is None
    assert room_of(b"/ws/chat/" + b"x" * 65 + b"/") is None


def test_a_post_is_encoded_once_as_a_message_frame() -> None:
    """`{"message": m}` becomes `{"type": "message", "message": m}`; anything else, nothing."""
    frame = broadcast_payload(json.dumps({"message": "b|r|0|1|2", "extra": 1}))
    assert frame is not None
    assert json.loads(frame) == {"type": "message", "message": "b|r|0|1|2"}
    assert broadcast_payload("not json") is None
    assert broadcast_payload("[1]") is None
    assert broadcast_payload('{"text": "no message"}') is None


async def test_every_member_of_the_room_and_only_it_receives_each_post_in_order() -> None:
    """Sender included, Origin ignored, another room untouched; its room is gone once empty."""
    rooms = Rooms()
    server = await serve(HOST, 0, rooms)
    port = server.sockets[0].getsockname()[1]
    base = f"ws://{HOST}:{port}/ws/chat"
    try:
        async with (
            connect(f"{base}/one/", origin="http://elsewhere.example") as sender,  # type: ignore[arg-type]
            connect(f"{base}/one/") as member,
            connect(f"{base}/two/") as outsider,
        ):
            for n in range(3):
                await sender.send(json.dumps({"message": f"m{n}"}))
            await outsider.send(json.dumps({"message": "marker"}))
            for ws in (sender, member):
                got = [json.loads(await ws.recv())["message"] for _ in range(3)]
                assert got == ["m0", "m1", "m2"]
            # The outsider's first frame is its own marker: nothing of room one came before it.
            assert json.loads(await outsider.recv()) == {"type": "message", "message": "marker"}
        for _ in range(100):
            if not len(rooms):
                break
            await asyncio.sleep(0.01)  # the server sees the closes after the client does
        assert len(rooms) == 0
    finally:
        server.close()
        await server.wait_closed()


async def test_any_other_path_is_refused() -> None:
    """Not a room: 404 at the handshake."""
    server = await serve(HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://{HOST}:{port}/elsewhere/"):
                pass
    finally:
        server.close()
        await server.wait_closed()
