"""Presence: who is in each room, in memory and across processes on Redis, with no ghosts."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.connection import Connection

from chat.presence import (
    MAX_NAME_CHARS,
    MAX_PERSON_KEY_CHARS,
    Presence,
    diff,
    presence_frame,
)
from chat.testing.redis_server import RedisServer, free_port
from chat.testing.stores import builder, store_url, unique, wait_until

# A Redis call that hangs is given up after this; tests allow this much on top.
TIMEOUT = 0.3
SLACK = 0.3
# Short enough to wait out in a test, long enough for a few heartbeats (lifetime / 3) to land.
SHORT_LIFETIME = 0.6


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def storage(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs in memory and on a real Redis."""
    return store_url(request)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Presence]]:
    """Build Presences (one fresh key prefix per test unless given); all closed at the end."""
    async with builder(Presence, prefix=unique("test"), timeout=TIMEOUT) as build:
        yield build


async def hash_of(client: aioredis.Redis, key: str) -> dict[bytes, bytes]:
    """A Redis hash (redis-py types HGETALL as maybe synchronous)."""
    return await cast(Awaitable[dict[bytes, bytes]], client.hgetall(key))


# --- one process ---------------------------------------------------------------------------


async def test_enter_leave_people(make: Callable[..., Presence], storage: str) -> None:
    presence = make(storage=storage)
    assert await presence.people("lobby") == []
    await presence.enter("lobby", "s1", "user:1", "ann")
    await presence.enter("lobby", "s2", "user:2", "bob")
    await presence.enter("other", "s3", "user:3", "cy")
    assert await presence.people("lobby") == ["ann", "bob"]
    assert await presence.people("other") == ["cy"]
    await presence.leave("lobby", "s1")
    assert await presence.people("lobby") == ["bob"]
    await presence.leave("lobby", "s2")
    await presence.leave("other", "s3")
    assert await presence.people("lobby") == []
    assert await presence.people("other") == []


async def test_two_tabs_of_one_person_count_once(
    make: Callable[..., Presence], storage: str
) -> None:
    presence = make(storage=storage)
    await presence.enter("lobby", "tab1", "user:1", "ann")
    await presence.enter("lobby", "tab2", "user:1", "ann")
    assert await presence.people("lobby") == ["ann"]
    await presence.leave("lobby", "tab1")
    assert await presence.people("lobby") == ["ann"]
    await presence.leave("lobby", "tab2")
    assert await presence.people("lobby") == []


async def test_of_a_persons_names_the_latest_entered_counts(
    make: Callable[..., Presence], storage: str
) -> None:
    presence = make(storage=storage)
    # A guest renamed in a second tab: one person, the new name.
    await presence.enter("lobby", "tab1", "guest:k", "guest-old")
    await presence.enter("lobby", "tab2", "guest:k", "guest-new")
    assert await presence.people("lobby") == ["guest-new"]
    await presence.leave("lobby", "tab2")
    assert await presence.people("lobby") == ["guest-old"]


async def test_people_are_distinct_names_sorted_case_insensitively(
    make: Callable[..., Presence], storage: str
) -> None:
    presence = make(storage=storage)
    for number, name in enumerate(["bob", "Ann", "carl", "alice", "Bea"]):
        await presence.enter("lobby", f"s{number}", f"user:{number}", name)
    assert await presence.people("lobby") == ["alice", "Ann", "Bea", "bob", "carl"]


async def test_leaving_a_socket_that_never_entered_changes_nothing(
    make: Callable[..., Presence], storage: str
) -> None:
    presence = make(storage=storage)
    await presence.enter("lobby", "s1", "user:1", "ann")
    await presence.leave("lobby", "nobody")
    await presence.leave("elsewhere", "s1")
    await presence.leave("lobby", "s1")
    await presence.leave("lobby", "s1")
    assert await presence.people("lobby") == []


async def test_people_of_many_rooms(make: Callable[..., Presence], storage: str) -> None:
    presence = make(storage=storage)
    rooms = [f"room-{number}" for number in range(100)]
    for number, room in enumerate(rooms):
        if number % 2 == 0:
            await presence.enter(room, f"s{number}", f"user:{number}", f"person-{number}")
    people = await presence.people_of_rooms([*rooms, rooms[0]])
    assert list(people) == rooms
    for number, room in enumerate(rooms):
        assert people[room] == ([f"person-{number}"] if number % 2 == 0 else [])
    assert await presence.people_of_rooms([]) == {}


async def test_long_person_keys_and_names_are_bounded(
    make: Callable[..., Presence], storage: str
) -> None:
    presence = make(storage=storage)
    long_name = "n" * (MAX_NAME_CHARS + 50)
    await presence.enter("lobby", "s1", "k" * (MAX_PERSON_KEY_CHARS + 1), long_name)
    await presence.enter("lobby", "s2", "k" * (MAX_PERSON_KEY_CHARS + 1), long_name)
    await presence.enter("lobby", "s3", "k" * (MAX_PERSON_KEY_CHARS + 2), "other")
    assert await presence.people("lobby") == [long_name[:MAX_NAME_CHARS], "other"]


def test_the_settings_choose_the_storage_and_lifetime(settings: Any) -> None:
    settings.CHAT_PRESENCE_STORAGE = "memory://"
    settings.CHAT_PRESENCE_LIFETIME = 30
    presence = Presence.from_settings()
    assert presence.redis is None
    assert (presence.lifetime, presence.heartbeat.interval) == (30.0, 10.0)
    settings.CHAT_PRESENCE_STORAGE = "redis://127.0.0.1:6379/0"  # not connected to
    assert Presence.from_settings().redis is not None
    settings.CHAT_PRESENCE_STORAGE = "postgres://nope"
    with pytest.raises(ImproperlyConfigured, match="CHAT_PRESENCE_STORAGE"):
        Presence.from_settings()


# --- Redis: across processes ---------------------------------------------------------------


@pytest.mark.redis
async def test_two_processes_see_each_others_people(
    make: Callable[..., Presence], redis_url: str
) -> None:
    first, second = make(storage=redis_url), make(storage=redis_url)
    await first.enter("lobby", "a1", "user:1", "ann")
    await second.enter("lobby", "b1", "user:2", "bob")
    # The same person in both processes counts once.
    await second.enter("lobby", "b2", "user:1", "ann")
    assert await first.people("lobby") == ["ann", "bob"]
    assert await second.people("lobby") == ["ann", "bob"]
    await first.leave("lobby", "a1")
    assert await first.people("lobby") == ["ann", "bob"]
    await second.leave("lobby", "b2")
    assert await first.people("lobby") == ["bob"]


@pytest.mark.redis
async def test_the_redis_layout(make: Callable[..., Presence], redis_url: str) -> None:
    prefix = unique("layout")
    presence = make(storage=redis_url, prefix=prefix, lifetime=SHORT_LIFETIME * 10)
    await presence.enter("lobby", "s1", "user:1", "ann")
    client = aioredis.Redis.from_url(redis_url)
    try:
        members = await client.zrange(f"{prefix}:presence:{{lobby}}", 0, -1, withscores=True)
        assert [member for member, _ in members] == [b"s1"]
        assert 0 < members[0][1] - time.time() <= SHORT_LIFETIME * 10
        who = await hash_of(client, f"{prefix}:presence:{{lobby}}:who")
        assert list(who) == [b"s1"]
        assert json.loads(who[b"s1"])[:2] == ["user:1", "ann"]
        for key in (f"{prefix}:presence:{{lobby}}", f"{prefix}:presence:{{lobby}}:who"):
            assert 0 < await client.pttl(key) <= SHORT_LIFETIME * 10 * 1000
        await presence.leave("lobby", "s1")
        assert await client.keys(f"{prefix}:*") == []
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_process_that_stops_beating_loses_its_people_after_the_lifetime(
    make: Callable[..., Presence], redis_url: str
) -> None:
    prefix = unique("killed")
    doomed = make(storage=redis_url, prefix=prefix, lifetime=SHORT_LIFETIME)
    survivor = make(storage=redis_url, prefix=prefix, lifetime=SHORT_LIFETIME)
    entered_at = time.monotonic()
    await doomed.enter("lobby", "d1", "user:1", "ann")
    await survivor.enter("lobby", "s1", "user:2", "bob")
    # While both beat, both stay past their first expiry.
    while time.monotonic() < entered_at + 2 * SHORT_LIFETIME:
        assert await survivor.people("lobby") == ["ann", "bob"]
        await asyncio.sleep(0.05)
    # The doomed process dies: no more heartbeats, no leave, nothing cleaned up.
    await doomed.heartbeat.stop()
    died_at = time.monotonic()

    async def ann_gone() -> bool:
        return await survivor.people("lobby") == ["bob"]

    await wait_until(ann_gone, within=SHORT_LIFETIME + 2)
    assert time.monotonic() - died_at <= SHORT_LIFETIME + SLACK
    # Its hash field went too: a dead process leaves nothing behind in a live room.
    client = aioredis.Redis.from_url(redis_url)
    try:
        assert list(await hash_of(client, f"{prefix}:presence:{{lobby}}:who")) == [b"s1"]
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_the_heartbeat_brings_back_what_redis_lost(
    make: Callable[..., Presence], redis_url: str
) -> None:
    prefix = unique("lost")
    presence = make(storage=redis_url, prefix=prefix, lifetime=SHORT_LIFETIME)
    other = make(storage=redis_url, prefix=prefix)
    await presence.enter("lobby", "s1", "user:1", "ann")
    client = aioredis.Redis.from_url(redis_url)
    try:
        # As after a Redis restart without persistence.
        await client.delete(f"{prefix}:presence:{{lobby}}", f"{prefix}:presence:{{lobby}}:who")
    finally:
        await client.aclose()
    assert await other.people("lobby") == []

    async def ann_back() -> bool:
        return await other.people("lobby") == ["ann"]

    await wait_until(ann_back, within=SHORT_LIFETIME + 2)


@pytest.mark.redis
async def test_close_takes_the_process_sockets_out(
    make: Callable[..., Presence], redis_url: str
) -> None:
    closing, other = make(storage=redis_url), make(storage=redis_url)
    await closing.enter("lobby", "c1", "user:1", "ann")
    await other.enter("lobby", "o1", "user:2", "bob")
    await closing.close()
    assert await other.people("lobby") == ["bob"]


@pytest.mark.redis
async def test_people_of_many_rooms_is_one_round_trip(
    make: Callable[..., Presence], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    presence = make(storage=redis_url)
    rooms = [f"room-{number}" for number in range(100)]
    for number, room in enumerate(rooms):
        await presence.enter(room, f"s{number}", f"user:{number}", f"person-{number}")
    await presence.people("warm-up")  # Redis learns the script
    sends = 0
    send = Connection.send_packed_command

    async def counted(self: Connection, *args: Any, **kwargs: Any) -> None:
        nonlocal sends
        sends += 1
        await send(self, *args, **kwargs)

    monkeypatch.setattr(Connection, "send_packed_command", counted)
    people = await presence.people_of_rooms(rooms)
    assert sends == 1
    assert people == {room: [f"person-{number}"] for number, room in enumerate(rooms)}


# --- Redis down or frozen ------------------------------------------------------------------


async def every_call_returns_within_the_timeout(presence: Presence) -> None:
    """enter, leave and people neither raise nor wait much past the timeout."""
    for call in (
        lambda: presence.enter("lobby", "s1", "user:1", "ann"),
        lambda: presence.people("lobby"),
        lambda: presence.people_of_rooms(["lobby", "other"]),
        lambda: presence.leave("lobby", "s1"),
    ):
        start = time.monotonic()
        await call()
        assert time.monotonic() - start < TIMEOUT + SLACK


async def test_an_unreachable_redis_fails_soft_and_warns_once(
    make: Callable[..., Presence], caplog: pytest.LogCaptureFixture
) -> None:
    presence = make(storage=f"redis://127.0.0.1:{free_port()}/0", retry_store_after=0)
    with caplog.at_level(logging.WARNING, logger="chat.presence"):
        for _ in range(3):
            await every_call_returns_within_the_timeout(presence)
        # This process's own sockets are still shown.
        await presence.enter("lobby", "s1", "user:1", "ann")
        assert await presence.people("lobby") == ["ann"]
    warnings = [record for record in caplog.records if record.name == "chat.presence"]
    assert len(warnings) == 1
    assert "presence shows the last people read" in warnings[0].getMessage()


@pytest.mark.redis
async def test_a_frozen_redis_answers_with_the_last_people_read(
    make: Callable[..., Presence], own_redis: RedisServer
) -> None:
    here = make(storage=own_redis.url, retry_store_after=0)
    elsewhere = make(storage=own_redis.url, retry_store_after=0)
    await here.enter("lobby", "h1", "user:1", "ann")
    await elsewhere.enter("lobby", "e1", "user:2", "bob")
    assert await here.people("lobby") == ["ann", "bob"]
    own_redis.freeze()
    try:
        await here.enter("lobby", "h2", "user:3", "cy")
        start = time.monotonic()
        # The last list read, with this process's newcomer.
        assert await here.people("lobby") == ["ann", "bob", "cy"]
        assert time.monotonic() - start < TIMEOUT + SLACK
        await every_call_returns_within_the_timeout(here)
    finally:
        own_redis.thaw()


# --- frames --------------------------------------------------------------------------------


def test_diff_says_who_joined_and_who_left() -> None:
    assert diff(["ann", "bob"], ["bob", "cy", "dee"]) == (["cy", "dee"], ["ann"])
    assert diff([], ["ann"]) == (["ann"], [])
    assert diff(["ann"], []) == ([], ["ann"])
    assert diff(["ann"], ["ann"]) == ([], [])


def test_presence_frames_carry_everyone_or_the_changes() -> None:
    assert presence_frame(["ann", "bob"]) == {
        "type": "presence",
        "people": [{"name": "ann"}, {"name": "bob"}],
    }
    assert presence_frame([]) == {"type": "presence", "people": []}
    assert presence_frame(joined=["cy"], left=["ann"]) == {
        "type": "presence",
        "joined": [{"name": "cy"}],
        "left": [{"name": "ann"}],
    }
    assert presence_frame(joined=["cy"]) == {
        "type": "presence",
        "joined": [{"name": "cy"}],
        "left": [],
    }
    with pytest.raises(ValueError, match="either"):
        presence_frame(["ann"], joined=["cy"])
    with pytest.raises(ValueError, match="needs"):
        presence_frame()


async def test_guests_are_marked_as_guests_in_presence_frames(
    make: Callable[..., Presence], storage: str
) -> None:
    presence = make(storage=storage)
    await presence.enter("lobby", "s1", "user:1", "ann")
    await presence.enter("lobby", "s2", "guest:guest-1a2b3c", "bob")
    people = await presence.people("lobby")
    assert presence_frame(people) == {
        "type": "presence",
        "people": [{"name": "ann"}, {"name": "bob", "guest": True}],
    }
    await presence.leave("lobby", "s2")
    assert presence_frame(joined=[], left=people[1:]) == {
        "type": "presence",
        "joined": [],
        "left": [{"name": "bob", "guest": True}],
    }
