"""Rate limits and socket caps (chat/throttle.py), in memory and on a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from django.core.exceptions import ImproperlyConfigured
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

import mysite.settings
from chat.testing.redis_server import RedisServer, free_port
from chat.testing.stores import builder, store_url, unique, wait_until
from chat.throttle import FloodGuard, Policy, Refused, Throttle, _MemoryStorage

ROOT = Path(__file__).resolve().parents[2]

# Small enough to exhaust in a few calls, long enough that no window rolls during a test (in
# memory windows start on the clock's hour; in Redis at their first hit).
SMALL = Policy(
    posts_per_person="3/hour",
    posts_per_address="5/hour",
    history_per_person="2/hour",
    history_per_address="4/hour",
    handshakes_per_address="3/hour",
    new_rooms_per_address="2/hour",
    sockets_per_address=3,
    sockets_per_person=2,
)
# A store call that hangs is given up after this; tests allow this much on top.
TIMEOUT = 0.3
SLACK = 0.3


@pytest.fixture(
    params=["memory", pytest.param("redis", marks=pytest.mark.redis)],
)
def storage(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs on the in-memory store and on a real Redis."""
    return store_url(request)


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., Throttle]]:
    """Build throttles (SMALL policy, a fresh key prefix unless given); all closed at the end."""
    async with builder(Throttle, policy=SMALL, prefix=unique("test"), timeout=TIMEOUT) as build:
        yield build


def check(
    throttle: Throttle, method: str, *, person: str, address: str
) -> Awaitable[Refused | None]:
    """Call a rate check with the arguments it takes."""
    if method in {"handshake", "new_room"}:
        return getattr(throttle, method)(address=address)
    return getattr(throttle, method)(person=person, address=address)


# --- rates ---------------------------------------------------------------------------------

RATES = [
    # method, the limit that refuses, calls it allows, what stays the same from call to call
    ("post", "posts_per_person", 3, "person"),
    ("post", "posts_per_address", 5, "address"),
    ("history", "history_per_person", 2, "person"),
    ("history", "history_per_address", 4, "address"),
    ("handshake", "handshakes_per_address", 3, "address"),
    ("new_room", "new_rooms_per_address", 2, "address"),
]


@pytest.mark.parametrize(("method", "limit", "allowed", "same"), RATES)
async def test_each_rate_refuses_past_its_limit_for_its_key_only(
    make: Callable[..., Throttle], storage: str, method: str, limit: str, allowed: int, same: str
) -> None:
    throttle = make(storage=storage)
    person, address = unique("person"), unique("address")

    def call() -> Awaitable[Refused | None]:
        # Vary the other key, so that only the key under test can refuse.
        return check(
            throttle,
            method,
            person=person if same == "person" else unique("person"),
            address=address if same == "address" else unique("address"),
        )

    for _ in range(allowed):
        assert await call() is None
    refused = await call()
    assert refused is not None
    assert refused.limit == limit
    assert 0 < refused.retry_after <= 3601  # an hour, rounded up
    # Someone else is unaffected.
    assert await check(throttle, method, person=unique("person"), address=unique("address")) is None


async def test_a_post_refused_for_the_person_holds_at_any_address(
    make: Callable[..., Throttle], storage: str
) -> None:
    throttle = make(storage=storage)
    for _ in range(3):
        assert await throttle.post(person="ann", address=unique("address")) is None
    refused = await throttle.post(person="ann", address=unique("address"))
    assert refused is not None
    assert refused.limit == "posts_per_person"


async def test_retry_after_says_when_a_retry_succeeds(
    make: Callable[..., Throttle], storage: str
) -> None:
    throttle = make(
        storage=storage, policy=dataclasses.replace(SMALL, handshakes_per_address="2/second")
    )
    assert await throttle.handshake(address="a") is None
    assert await throttle.handshake(address="a") is None
    refused = await throttle.handshake(address="a")
    assert refused is not None
    # Two at once fill the window: the next fits once it has slid past them. Redis starts a
    # window at its first hit (so nearly a second); memory on the clock's second.
    assert (0.9 if storage != "memory://" else 0.0) < refused.retry_after <= 1.01
    await asyncio.sleep(refused.retry_after)  # the very delay under test
    assert await throttle.handshake(address="a") is None


async def test_the_default_policy_lets_a_resend_burst_through_and_stops_a_flood(
    make: Callable[..., Throttle],
) -> None:
    throttle = make(policy=Policy.from_settings())
    results = [await throttle.post(person="ann", address="192.0.2.1") for _ in range(12)]
    # A page that queued 10 posts while offline sends them at once on reconnect.
    assert results[:10] == [None] * 10
    # A script sending as fast as it can is refused within its first second (the 11th may
    # pass when the burst straddles the clock's second, as the previous second's weighs less).
    refused = results[10] or results[11]
    assert refused is not None
    assert refused.limit == "posts_per_person"


def test_the_settings_refuse_a_malformed_rate_or_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAT_TEST_RATE", "lots")
    with pytest.raises(ImproperlyConfigured, match="CHAT_TEST_RATE='lots'"):
        mysite.settings._rate("CHAT_TEST_RATE", "1/second")
    monkeypatch.setenv("CHAT_TEST_CAP", "0")
    with pytest.raises(ImproperlyConfigured, match="CHAT_TEST_CAP='0'"):
        mysite.settings._cap("CHAT_TEST_CAP", 1)


# --- off -----------------------------------------------------------------------------------


async def test_disabled_refuses_nothing_and_touches_no_store(make: Callable[..., Throttle]) -> None:
    # A store that would fail on first use: the throttle must never get that far.
    throttle = make(enabled=False, storage=f"redis://127.0.0.1:{free_port()}/0")
    assert throttle.store is None
    assert throttle.redis is None
    for n in range(100):
        assert await throttle.post(person="ann", address="a") is None
        assert await throttle.history(person="ann", address="a") is None
        assert await throttle.handshake(address="a") is None
        assert await throttle.new_room(address="a") is None
        assert await throttle.socket_opened(socket_id=str(n), person="ann", address="a") is None
    await throttle.socket_closed(socket_id="0", person="ann", address="a")
    assert throttle.heartbeat is None


def test_chat_limits_off_builds_a_disabled_throttle(settings: Any) -> None:
    settings.CHAT_LIMITS_ENABLED = False
    assert Throttle.from_settings().enabled is False


# --- caps ----------------------------------------------------------------------------------


async def test_sockets_per_address_count_and_release(
    make: Callable[..., Throttle], storage: str
) -> None:
    throttle = make(storage=storage)
    address = unique("address")
    for n in range(3):
        assert (
            await throttle.socket_opened(socket_id=f"s{n}", person=f"p{n}", address=address) is None
        )
    refused = await throttle.socket_opened(socket_id="s3", person="p3", address=address)
    assert refused is not None
    assert refused.limit == "sockets_per_address"
    assert refused.retry_after > 0
    # Opening a counted socket again counts it once; closing a refused one frees nothing.
    assert await throttle.socket_opened(socket_id="s0", person="p0", address=address) is None
    await throttle.socket_closed(socket_id="s3", person="p3", address=address)
    assert await throttle.socket_opened(socket_id="s4", person="p4", address=address) is not None
    # Another address is unaffected; a closed socket frees its slot.
    assert await throttle.socket_opened(socket_id="t0", person="q", address=unique("a")) is None
    await throttle.socket_closed(socket_id="s1", person="p1", address=address)
    assert await throttle.socket_opened(socket_id="s5", person="p5", address=address) is None


async def test_sockets_per_person_count_and_release(
    make: Callable[..., Throttle], storage: str
) -> None:
    throttle = make(storage=storage)
    person = unique("person")
    for n in range(2):
        assert (
            await throttle.socket_opened(socket_id=f"s{n}", person=person, address=f"a{n}") is None
        )
    refused = await throttle.socket_opened(socket_id="s2", person=person, address="a2")
    assert refused is not None
    assert refused.limit == "sockets_per_person"
    # The refused socket did not take a slot of its address either.
    for n in range(3):
        assert await throttle.socket_opened(socket_id=f"o{n}", person=f"o{n}", address="a2") is None
    assert await throttle.socket_opened(socket_id="x", person=unique("person"), address="b") is None
    await throttle.socket_closed(socket_id="s0", person=person, address="a0")
    assert await throttle.socket_opened(socket_id="s3", person=person, address="a3") is None


# --- keys ----------------------------------------------------------------------------------


async def test_ipv6_addresses_of_one_slash_64_share_limits(make: Callable[..., Throttle]) -> None:
    throttle = make()
    for host in range(2):
        assert await throttle.new_room(address=f"2001:db8:0:1::{host + 1}") is None
    refused = await throttle.new_room(address="2001:db8:0:1:ffff::9")
    assert refused is not None
    assert await throttle.new_room(address="2001:db8:0:2::1") is None
    # An IPv4 address mapped into IPv6 is that IPv4 address.
    for _ in range(2):
        assert await throttle.new_room(address="192.0.2.7") is None
    assert await throttle.new_room(address="::ffff:192.0.2.7") is not None


@pytest.mark.redis
async def test_redis_keys_hold_no_client_text(
    make: Callable[..., Throttle], redis_url: str
) -> None:
    prefix = unique("test")
    throttle = make(storage=redis_url, prefix=prefix)
    hostile = "\r\n*3\r\n$3\r\nDEL\r\n" + "x" * 10_000 + "\ud800{}/:"
    assert await throttle.post(person=hostile, address=hostile) is None
    assert await throttle.socket_opened(socket_id="s", person=hostile, address=hostile) is None
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [key.decode() async for key in client.scan_iter(match=f"{prefix}:*")]
    finally:
        await client.aclose()
    assert sum(":limits:" in key for key in keys) == 2  # a counter per rate and subject
    assert sum(":sockets:" in key for key in keys) == 2  # a set per cap and subject
    for key in keys:
        assert len(key) < len(prefix) + 100
        assert re.fullmatch(r"[\w:{}/.-]+", key), key


# --- across processes ----------------------------------------------------------------------


@pytest.mark.redis
async def test_two_throttles_share_rates_and_caps_on_redis(
    make: Callable[..., Throttle], redis_url: str
) -> None:
    first, second = make(storage=redis_url), make(storage=redis_url)
    allowed = [
        await throttle.post(person="ann", address=unique("a")) is None
        for throttle in (first, second) * 3
    ]
    assert allowed.count(True) == 3
    for n, throttle in enumerate((first, second, first)):
        assert await throttle.socket_opened(socket_id=f"s{n}", person=f"p{n}", address="a") is None
    refused = await second.socket_opened(socket_id="s3", person="p3", address="a")
    assert refused is not None
    assert refused.limit == "sockets_per_address"
    await first.socket_closed(socket_id="s0", person="p0", address="a")
    assert await second.socket_opened(socket_id="s3", person="p3", address="a") is None


@pytest.mark.redis
async def test_a_throttle_that_stops_beating_stops_counting_after_the_lifetime(
    make: Callable[..., Throttle], redis_url: str
) -> None:
    lifetime = 0.6
    policy = dataclasses.replace(SMALL, sockets_per_address=1)
    doomed = make(
        storage=redis_url, policy=policy, socket_lifetime=lifetime, heartbeat_interval=0.1
    )
    survivor = make(storage=redis_url, policy=policy, socket_lifetime=lifetime)
    opened_at = time.monotonic()
    assert await doomed.socket_opened(socket_id="old", person="ann", address="a") is None

    async def refused() -> bool:
        return await survivor.socket_opened(socket_id="new", person="bob", address="a") is not None

    # While its owner beats, the socket counts past its first expiry.
    while time.monotonic() < opened_at + 2 * lifetime:
        assert await refused()
        await asyncio.sleep(0.05)
    # The owner dies without closing it (the store is left alone): it stops counting.
    await doomed.close()
    took = await wait_until(lambda: _not(refused), within=lifetime + 2)
    assert took <= lifetime + SLACK


async def _not(condition: Callable[[], Awaitable[bool]]) -> bool:
    return not await condition()


# The throttle of a process of its own: hits one rate and opens sockets on one address, prints
# how many were allowed, then keeps its sockets (and their heartbeat) until it is killed.
CHILD = """
import asyncio, json, os, sys
import django
django.setup()
from django.conf import settings
from chat.throttle import Policy, Throttle

async def main():
    throttle = Throttle(
        policy=Policy.from_settings(),
        storage=settings.CHAT_LIMITS_STORAGE,
        prefix=os.environ["TEST_PREFIX"],
        socket_lifetime=1.0,
        heartbeat_interval=0.2,
    )
    posts = [await throttle.post(person="flooder", address=f"a{n}") for n in range(40)]
    sockets = [
        await throttle.socket_opened(socket_id=f"{os.getpid()}-{n}", person=f"p{n}", address="nat")
        for n in range(8)
    ]
    print(json.dumps({"posts": posts.count(None), "sockets": sockets.count(None)}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@pytest.fixture
def children(redis_url: str) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Start throttle processes on the test Redis; any still running are killed at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(prefix: str) -> subprocess.Popen[str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CHAT_") and key != "REDIS_URL"
        }
        env.update(
            DJANGO_SETTINGS_MODULE="mysite.settings",
            PYTHONPATH=str(ROOT),
            REDIS_URL=redis_url,
            CHAT_LIMITS="on",
            CHAT_LIMIT_POSTS_PER_PERSON="20/minute",
            CHAT_MAX_SOCKETS_PER_ADDRESS="5",
            TEST_PREFIX=prefix,
        )
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(child)
        return child

    yield start
    for child in started:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)  # and close its pipes


@pytest.mark.redis
async def test_processes_share_one_limit_and_a_killed_ones_sockets_expire(
    make: Callable[..., Throttle],
    redis_url: str,
    children: Callable[[str], subprocess.Popen[str]],
) -> None:
    prefix = unique("test")
    processes = [children(prefix), children(prefix)]
    reports = []
    for process in processes:
        assert process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout=60)
        reports.append(json.loads(line))
    # Both flooded the same person and filled the same address: together, one limit each.
    assert sum(report["posts"] for report in reports) == 20
    assert sum(report["sockets"] for report in reports) == 5
    here = make(
        storage=redis_url, prefix=prefix, policy=dataclasses.replace(SMALL, sockets_per_address=5)
    )

    async def nat_full() -> bool:
        return await here.socket_opened(socket_id="here", person="me", address="nat") is not None

    assert await nat_full()
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    # No socket_closed ever came, no heartbeat comes any more: within the lifetime, room again.
    took = await wait_until(lambda: _not(nat_full), within=1.0 + 2)
    assert took <= 1.0 + SLACK


# --- a failing store -------------------------------------------------------------------------


async def every_call_allows_within_the_timeout(throttle: Throttle) -> None:
    """Each check and the socket calls answer None (allow) within the timeout."""
    calls: list[Callable[[], Awaitable[Refused | None]]] = [
        lambda: throttle.post(person="ann", address="a"),
        lambda: throttle.history(person="ann", address="a"),
        lambda: throttle.handshake(address="a"),
        lambda: throttle.new_room(address="a"),
        lambda: throttle.socket_opened(socket_id="s", person="ann", address="a"),
        lambda: throttle.socket_closed(socket_id="s", person="ann", address="a"),
    ]
    for call in calls:
        start = time.monotonic()
        assert await call() is None
        assert time.monotonic() - start < TIMEOUT + SLACK


async def test_an_unreachable_store_allows_everything_and_warns_once(
    make: Callable[..., Throttle], caplog: pytest.LogCaptureFixture
) -> None:
    throttle = make(storage=f"redis://127.0.0.1:{free_port()}/0", retry_store_after=0)
    with caplog.at_level(logging.WARNING, logger="chat.throttle"):
        for _ in range(3):
            await every_call_allows_within_the_timeout(throttle)
    warnings = [record for record in caplog.records if record.name == "chat.throttle"]
    assert len(warnings) == 1
    assert "limits and caps are off" in warnings[0].getMessage()


@pytest.mark.redis
async def test_a_frozen_store_allows_everything_within_the_timeout(
    make: Callable[..., Throttle], own_redis: RedisServer
) -> None:
    throttle = make(storage=own_redis.url, retry_store_after=0)
    fresh = make(storage=own_redis.url, retry_store_after=0)
    # `throttle` holds open connections when the server freezes; `fresh` connects after.
    assert await throttle.new_room(address="a") is None
    own_redis.freeze()
    await every_call_allows_within_the_timeout(throttle)
    await every_call_allows_within_the_timeout(fresh)
    own_redis.thaw()
    # Back to counting (at an address of its own: commands sent during the freeze may still
    # be carried out once Redis runs again).
    assert await throttle.new_room(address="b") is None
    assert await throttle.new_room(address="b") is None
    assert await throttle.new_room(address="b") is not None


@pytest.mark.redis
async def test_after_a_failure_checks_skip_the_store_for_a_while(
    make: Callable[..., Throttle], own_redis: RedisServer
) -> None:
    throttle = make(storage=own_redis.url, retry_store_after=60)
    own_redis.freeze()
    assert await throttle.post(person="ann", address="a") is None  # waits out the timeout
    start = time.monotonic()
    for _ in range(100):
        assert await throttle.post(person="ann", address="a") is None
    assert time.monotonic() - start < TIMEOUT
    own_redis.thaw()


# --- flooding --------------------------------------------------------------------------------


def test_flood_guard_closes_on_persistent_refusals_only() -> None:
    now = [0.0]
    guard = FloodGuard(clock=lambda: now[0])  # the defaults: 20 within 10 s
    # One refusal a second, for a minute: someone a little too fast, never closed.
    for _ in range(60):
        now[0] += 1.0
        assert guard.refused() is False
    # Twenty-one within ten seconds: closed.
    flooding = FloodGuard(clock=lambda: now[0])
    results = []
    for _ in range(21):
        now[0] += 0.1
        results.append(flooding.refused())
    assert results == [False] * 20 + [True]


# --- a contract with limits ------------------------------------------------------------------


async def test_limits_memory_storage_still_sweeps_through_the_overridden_hook() -> None:
    # _MemoryStorage relies on MemoryStorage calling the name-mangled `__schedule_expiry` after
    # each hit. If limits renames it, the sweep would run once per loop turn again.
    assert hasattr(MemoryStorage, "_MemoryStorage__schedule_expiry")
    store = _MemoryStorage()
    limiter = SlidingWindowCounterRateLimiter(store)
    item = parse("1000/minute")
    assert await limiter.hit(item, "k")
    first_sweep = store.timer
    assert first_sweep is not None
    for _ in range(20):
        assert await limiter.hit(item, "k")
        await asyncio.sleep(0)
    assert store.timer is first_sweep
    store.stop()
