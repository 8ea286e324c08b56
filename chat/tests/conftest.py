"""Markers by tier, and the communicator fixtures the consumer tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from channels.testing import WebsocketCommunicator

from chat.testing.redis_server import RedisServer, RedisUnavailable
from chat.testing.server import DaphneServer
from chat.testing.ws import ORIGIN, Connect
from conftest import IN_CI
from mysite.asgi import application


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "browser" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.redis)


@pytest.fixture
async def connect(layer: str) -> AsyncIterator[Connect]:
    """Open communicators to rooms; every one is disconnected at the end of the test."""
    opened: list[WebsocketCommunicator] = []

    async def open_room(
        room: str, headers: list[tuple[bytes, bytes]] | None = None, query: str = ""
    ) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(
            application,
            f"/ws/chat/{room}/" + (f"?{query}" if query else ""),
            headers=[ORIGIN] if headers is None else headers,
        )
        connected, _ = await communicator.connect()
        assert connected, f"handshake to room {room!r} was refused"
        opened.append(communicator)
        return communicator

    yield open_room
    for communicator in opened:
        await communicator.disconnect()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, on a free port, which the test may stop and start."""
    try:
        server = RedisServer().start()
    except RedisUnavailable as error:
        if IN_CI:
            raise
        pytest.skip(str(error))
    yield server
    server.stop()


@pytest.fixture
def server(own_redis: RedisServer) -> Iterator[DaphneServer]:
    """The chat under daphne in a child process, on its own SQLite file and Redis."""
    daphne = DaphneServer(redis_url=own_redis.url).migrate().start()
    yield daphne
    daphne.stop()
