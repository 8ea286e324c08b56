"""Presence across daphne processes on one Redis: people in the room through either process are
seen by both, and the people of a process that is killed (not closed) leave within the
presence lifetime (60 s in production; a few seconds here)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from chat.testing.redis_server import RedisServer
from chat.testing.server import DaphneServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

LIFETIME = 6


@pytest.fixture
def two_servers(own_redis: RedisServer) -> Iterator[tuple[DaphneServer, DaphneServer]]:
    env = {"CHAT_PRESENCE_LIFETIME": str(LIFETIME)}
    first = DaphneServer(redis_url=own_redis.url, extra_env=env).migrate().start()
    second = DaphneServer(redis_url=own_redis.url, database=first.database, extra_env=env)
    second.start()
    yield first, second
    second.stop()
    first.stop()


class Watcher:
    """A protocol client that keeps who its presence frames say is in the room."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self.socket = socket
        self.people: set[str] = set()
        self.frames: list[dict[str, Any]] = []

    async def until(self, people: set[str] | None = None, *, size: int | None = None) -> float:
        """Read until the room holds `people` (or `size` people); return when (monotonic)."""
        while not (
            (people is not None and self.people == people)
            or (size is not None and len(self.people) == size)
        ):
            frame = json.loads(await asyncio.wait_for(self.socket.recv(), LIFETIME * 4))
            if frame["type"] != "presence":
                continue
            self.frames.append(frame)
            if "people" in frame:
                self.people = {person["name"] for person in frame["people"]}
            self.people |= {person["name"] for person in frame.get("joined", [])}
            self.people -= {person["name"] for person in frame.get("left", [])}
        return time.monotonic()


async def watch(server: DaphneServer, room: str) -> Watcher:
    socket = await websockets.connect(
        f"{server.ws_url}/ws/chat/{room}/?sync=1",
        origin=server.http_url,  # type: ignore[arg-type]
    )
    return Watcher(socket)


async def test_people_of_either_process_are_seen_and_a_killed_ones_leave(
    two_servers: tuple[DaphneServer, DaphneServer],
) -> None:
    first, second = two_servers
    here = await watch(first, "shared")
    await here.until(size=1)
    (own_name,) = here.people
    there = [await watch(second, "shared") for _ in range(2)]
    await here.until(size=3)
    await there[0].until(here.people)  # the other process sees the same room

    second.kill()  # SIGKILL: no close frame, no leave, nothing cleaned up
    killed_at = time.monotonic()
    gone_at = await here.until({own_name})
    # Gone within the lifetime, plus one heartbeat's lag and the roster's 1 s read.
    assert gone_at - killed_at <= LIFETIME + LIFETIME / 3 + 2
    await here.socket.close()
