"""Limits hold across processes: two daphnes on one Redis count one address's posts and sockets
together, so a flooder gains nothing by spreading over a load balancer's backends."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import websockets

from chat import protocol
from chat.testing.redis_server import RedisServer
from chat.testing.server import DaphneServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

LIMITS = {
    "CHAT_LIMITS": "on",
    "CHAT_LIMIT_POSTS_PER_ADDRESS": "6/minute",
    "CHAT_MAX_SOCKETS_PER_ADDRESS": "4",
}


@pytest.fixture
def two_servers(own_redis: RedisServer) -> Iterator[tuple[DaphneServer, DaphneServer]]:
    """Two daphne processes on one database and one Redis, with tight limits."""
    first = DaphneServer(redis_url=own_redis.url, extra_env=LIMITS).migrate().start()
    second = DaphneServer(redis_url=own_redis.url, database=first.database, extra_env=LIMITS)
    second.start()
    yield first, second
    second.stop()
    first.stop()


async def open_room(server: DaphneServer, room: str) -> websockets.ClientConnection:
    return await websockets.connect(
        f"{server.ws_url}/ws/chat/{room}/",
        origin=server.http_url,  # type: ignore[arg-type]
    )


async def outcome(socket: websockets.ClientConnection, client_id: str) -> str:
    """Post once; "ack" or the error code the server answers."""
    await socket.send(json.dumps({"message": client_id, "client_id": client_id}))
    while True:
        frame = json.loads(await socket.recv())
        if frame.get("client_id") == client_id and frame["type"] in {"ack", "error"}:
            return str(frame.get("code", "ack"))


async def test_two_processes_share_the_post_rate_and_the_socket_cap(
    two_servers: tuple[DaphneServer, DaphneServer],
) -> None:
    first, second = two_servers
    sockets = [await open_room(first, "shared"), await open_room(second, "shared")]
    # Alternating between the processes, one address gets six posts a minute in all.
    outcomes = [await outcome(sockets[n % 2], f"p{n}") for n in range(8)]
    assert outcomes == ["ack"] * 6 + ["rate_limited"] * 2

    # Two sockets are open; two more are allowed, one on each process; the fifth is refused
    # whichever process it reaches.
    sockets += [await open_room(first, "shared"), await open_room(second, "shared")]
    refused = await open_room(first, "shared")
    error = json.loads(await refused.recv())
    assert (error["code"], "sockets_per_address" in error["detail"]) == ("rate_limited", True)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await refused.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == protocol.CLOSE_RATE_LIMITED

    # A socket closed on one process frees a place on the other.
    await sockets.pop(0).close()
    admitted = await open_room(second, "shared")
    assert json.loads(await admitted.recv())["type"] == "message"  # the room's history
    for socket in [*sockets, admitted]:
        await socket.close()
