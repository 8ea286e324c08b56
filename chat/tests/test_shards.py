"""Sharded Redis: REDIS_URL names two servers, channels-redis puts each room's group on one of
them, and two daphne processes deliver across both. With one shard stopped, its rooms are
delivered by the hubs' database reconcile (chat/fanout.py): nothing is lost, and the other
shard's rooms keep their fast path.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from channels_redis.utils import _consistent_hash

from chat.rooms import group_name
from chat.testing.client import ResumingClient
from chat.testing.redis_server import RedisServer, RedisUnavailable
from chat.testing.server import DaphneServer
from conftest import IN_CI
from mysite.tests.test_settings import settings_in_fresh_process

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]

WAIT = 30


def test_redis_url_lists_shards_and_the_stores_use_the_first() -> None:
    built = settings_in_fresh_process(REDIS_URL="redis://a:6379/0, redis://b:6379/0")
    assert built["CHANNEL_LAYERS"]["default"]["CONFIG"] == {
        "hosts": ["redis://a:6379/0", "redis://b:6379/0"]
    }
    assert built["CHAT_LIMITS_STORAGE"] == "redis://a:6379/0"
    assert built["CHAT_PRESENCE_STORAGE"] == "redis://a:6379/0"


def shard_of(room: str, shards: int) -> int:
    """The shard channels-redis picks for a room's group (checked against Redis below)."""
    return _consistent_hash(f"asgi__group__{group_name(room)}", shards)


def rooms_on(shard: int, count: int) -> list[str]:
    """The first `count` room names whose group lives on `shard` of two."""
    names = (f"shard-room-{n}" for n in range(1_000))
    return [name for name in names if shard_of(name, 2) == shard][:count]


def holds(client: ResumingClient, last_seq: int) -> bool:
    return client.last_seq >= last_seq


@dataclass
class Shards:
    redis: list[RedisServer]
    daphnes: list[DaphneServer]


@pytest.fixture
def shards() -> Iterator[Shards]:
    try:
        redis = [RedisServer().start(), RedisServer().start()]
    except RedisUnavailable as error:
        if IN_CI:
            raise
        pytest.skip(str(error))
    url = ",".join(server.url for server in redis)
    first = DaphneServer(redis_url=url).migrate().start()
    second = DaphneServer(redis_url=url, database=first.database).start()
    yield Shards(redis=redis, daphnes=[first, second])
    second.stop()
    first.stop()
    for shard in redis:
        shard.stop()


def catch_ups(daphne: DaphneServer) -> int:
    """Rooms this process's reconcile found behind the database, from its /metrics."""
    with urllib.request.urlopen(f"{daphne.http_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^chat_reconcile_catch_ups_total (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else 0


class Rooms:
    """In each room, one resuming client on each daphne process."""

    def __init__(self, shards: Shards, names: list[str]) -> None:
        self.shards = shards
        self.clients = {
            name: [ResumingClient(daphne.ws_url, name) for daphne in shards.daphnes]
            for name in names
        }
        self.stop = asyncio.Event()
        self.tasks = [
            asyncio.create_task(client.run(self.stop))
            for room in self.clients.values()
            for client in room
        ]

    async def until_each(self, condition: Callable[[ResumingClient], bool]) -> None:
        async with asyncio.timeout(WAIT):
            for room in self.clients.values():
                for client in room:
                    await client.wait_until(functools.partial(condition, client))

    async def post(self, name: str, text: str) -> float:
        """Post from the first process's client; when the second's client has it (monotonic)."""
        poster, reader = self.clients[name]
        expected = reader.last_seq + 1
        await poster.post(text)
        async with asyncio.timeout(WAIT):
            await reader.wait_until(lambda: reader.last_seq >= expected)
        return time.monotonic()

    async def assert_everyone_holds(self) -> None:
        """Once nothing is pending: every client holds every stored message, in order, once."""
        await self.until_each(lambda client: not client.pending)
        for name, room in self.clients.items():
            stored = self.shards.daphnes[0].stored(name)
            async with asyncio.timeout(WAIT):
                for client in room:
                    await client.wait_until(functools.partial(holds, client, len(stored)))
            assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
            for client in room:
                assert client.messages == dict(stored)
                assert client.order == list(range(1, len(stored) + 1))

    async def close(self) -> None:
        self.stop.set()
        for room in self.clients.values():
            for client in room:
                await client.drop()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def rooms(shards: Shards) -> AsyncIterator[Rooms]:
    rooms = Rooms(shards, rooms_on(0, 2) + rooms_on(1, 2))
    await rooms.until_each(lambda client: client.synced_to is not None)
    yield rooms
    await rooms.close()


async def group_channels(server: RedisServer) -> set[str]:
    client = aioredis.Redis.from_url(server.url)
    try:
        return {name.decode() for name in await client.pubsub_channels(b"asgi__group__*")}
    finally:
        await client.aclose()


async def test_rooms_spread_over_both_shards_and_one_down_delays_only_its_own(
    shards: Shards, rooms: Rooms
) -> None:
    on_first, on_second = rooms_on(0, 2), rooms_on(1, 2)
    # Each room's group is subscribed on the shard the hash names, and on that one only.
    for index, names in enumerate((on_first, on_second)):
        subscribed = await group_channels(shards.redis[index])
        assert {f"asgi__group__{group_name(name)}" for name in names} <= subscribed
        other = await group_channels(shards.redis[1 - index])
        assert not {f"asgi__group__{group_name(name)}" for name in names} & other

    for name in on_first + on_second:
        await rooms.post(name, f"{name}: both up")
    reader = shards.daphnes[1]
    caught_up_before = catch_ups(reader)

    # Stop the second shard (the first also holds the limits and presence).
    shards.redis[1].stop()
    # A listener on the first shard sees its rooms' batches still go through Redis.
    listener = aioredis.Redis.from_url(shards.redis[0].url)
    pubsub = listener.pubsub()
    await pubsub.subscribe(*(f"asgi__group__{group_name(name)}" for name in on_first))
    try:
        for name in on_first:
            await rooms.post(name, f"{name}: one shard down")
            async with asyncio.timeout(WAIT):
                while (
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=WAIT) is None
                ):
                    pass
        # The second shard's rooms: stored, and delivered by the reconcile.
        await asyncio.gather(*(rooms.post(name, f"{name}: one shard down") for name in on_second))
    finally:
        await pubsub.aclose()
        await listener.aclose()
    assert catch_ups(reader) >= caught_up_before + len(on_second)

    await rooms.assert_everyone_holds()
