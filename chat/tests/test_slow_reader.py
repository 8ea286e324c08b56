"""A socket that stops reading is dropped; the room does not wait for it, and it can resume."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket

import pytest
import websockets

from chat.testing.server import DaphneServer
from chat.transport import SLOW_READER_LIMIT

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

TEXT = "x" * 3900
# Enough to fill the kernel's buffers on both sides many times over, then the server's limit.
MESSAGES = 3000
# How far the writer may run ahead of the sockets that do read (see the test).
AHEAD = 100


async def open_room(
    server: DaphneServer, room: str, query: str = "", **kwargs: object
) -> websockets.ClientConnection:
    return await websockets.connect(
        f"{server.ws_url}/ws/chat/{room}/{query}",
        origin=server.http_url,  # type: ignore[arg-type]
        max_size=None,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_reader_that_stops_reading_is_dropped_and_can_resume(server: DaphneServer) -> None:
    assert MESSAGES * len(TEXT) > 8 * SLOW_READER_LIMIT
    assert AHEAD * len(TEXT) < SLOW_READER_LIMIT / 2
    slow = await open_room(server, "firehose")
    # Stop reading, with a tiny receive window, so the server's buffer for this socket fills.
    slow.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.transport.pause_reading()
    reader = await open_room(server, "firehose")
    writer = await open_room(server, "firehose")

    # The sockets that do read share this test's one event loop with the writer: the writer
    # stays at most AHEAD messages (~400 KB, under the server's limit) in front of both, so
    # that on a busy machine they are never the slow readers themselves.
    received = {"reader": 0, "writer": 0}
    progress = asyncio.Event()

    async def post_all() -> None:
        for n in range(MESSAGES):
            while n - min(received.values()) > AHEAD:
                progress.clear()
                await progress.wait()
            await writer.send(json.dumps({"message": f"{n} {TEXT}"}))

    async def read_all() -> list[int]:
        seqs: list[int] = []
        while len(seqs) < MESSAGES:
            frame = json.loads(await reader.recv())
            seqs.append(frame["seq"])
            received["reader"] += 1
            progress.set()
        return seqs

    async def discard_incoming() -> None:
        # The writer is in the room too: it must read, or it would be the slow reader.
        with contextlib.suppress(websockets.ConnectionClosed):
            async for _ in writer:
                received["writer"] += 1
                progress.set()

    draining = asyncio.create_task(discard_incoming())
    posting = asyncio.create_task(post_all())
    # Everyone else gets everything, in order, while the slow socket is stuck.
    assert await asyncio.wait_for(read_all(), timeout=60) == list(range(1, MESSAGES + 1))
    await posting

    # The slow socket was cut off: what it can still read ends before the last message,
    # without a close frame (1006).
    slow.transport.resume_reading()
    got: list[int] = []

    async def read_until_closed() -> None:
        while True:
            got.append(json.loads(await asyncio.wait_for(slow.recv(), timeout=10))["seq"])

    with pytest.raises(websockets.ConnectionClosedError) as closed:
        await read_until_closed()
    assert closed.value.rcvd is None
    assert got == list(range(1, len(got) + 1))
    assert len(got) < MESSAGES

    # It resumes where it stopped and gets the rest.
    again = await open_room(server, "firehose", query=f"?after={len(got)}")
    rest = [
        json.loads(await asyncio.wait_for(again.recv(), timeout=10))["seq"]
        for _ in range(MESSAGES - len(got))
    ]
    assert rest == list(range(len(got) + 1, MESSAGES + 1))
    for connection in (again, reader, writer):
        await connection.close()
    await draining
