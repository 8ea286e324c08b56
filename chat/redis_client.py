"""The Redis client of the chat's own stores (limits, presence), and the guard around its calls.

The chat must keep running when Redis is slow, frozen or gone, so every store call is bounded
by a short timeout, redis-py itself never retries or waits on its own, and a failure makes the
caller skip the store for a few seconds (a frozen Redis then costs one timeout now and then,
not one per call) and logs a warning at most every WARN_EVERY seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

T = TypeVar("T")

# Every round trip to the store is bounded by this.
STORE_TIMEOUT = 0.5
# After a store failure, calls skip the store this long.
STORE_RETRY_AFTER = 5.0
# A failing store is logged at most this often.
WARN_EVERY = 30.0
# Connections to the store, at most; more calls at once wait for one (within the timeout).
STORE_CONNECTIONS = 32
# The URL schemes redis-py opens.
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


def is_memory(url: str, *, setting: str) -> bool:
    """Whether a store URL is "memory://" (else a Redis URL); refuse anything else."""
    scheme = url.partition("://")[0]
    if scheme == "memory":
        return True
    if scheme not in REDIS_SCHEMES:
        raise ImproperlyConfigured(
            f"{setting}={url!r}: use memory:// or a redis://, rediss:// or unix:// URL"
        )
    return False


def connection_pool(
    url: str, *, timeout: float = STORE_TIMEOUT, max_connections: int = STORE_CONNECTIONS
) -> aioredis.BlockingConnectionPool:
    """A pool of connections to a Redis URL that never retries and never waits past `timeout`."""
    # No retries inside redis-py: the timeout and the caller's fallback are the policy.
    # No socket_timeout either (StoreGuard bounds every call): with one, redis-py sends
    # through asyncio.wait_for, which on Python 3.11 can swallow a cancellation (gh-86296) and
    # costs a task per command.
    return aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


class StoreGuard:
    """Runs store calls within a timeout; a failure skips the store a while and is logged."""

    def __init__(
        self,
        *,
        logger: logging.Logger,
        consequence: str,
        timeout: float = STORE_TIMEOUT,
        retry_after: float = STORE_RETRY_AFTER,
        warn_every: float = WARN_EVERY,
    ) -> None:
        self.logger = logger
        # What the chat does while the store fails, for the warning ("presence shows ...").
        self.consequence = consequence
        self.timeout = timeout
        self.retry_after = retry_after
        self.warn_every = warn_every
        self.skipped_until = 0.0
        self.warned_at = -math.inf

    async def __call__(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """The call's result, or None when it failed, timed out or the store is skipped."""
        if time.monotonic() < self.skipped_until:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                return await call()
        except Exception as error:
            self.failed(error)
            return None

    def failed(self, error: Exception) -> None:
        """Skip the store for a while, and say so at most every `warn_every` seconds."""
        now = time.monotonic()
        self.skipped_until = now + self.retry_after
        if now - self.warned_at >= self.warn_every:
            self.warned_at = now
            self.logger.warning(
                "the store failed (%r); %s for %.0f s", error, self.consequence, self.retry_after
            )


class Heartbeat:
    """A task that calls `beat` every `interval` seconds, from start() until stop()."""

    def __init__(self, beat: Callable[[], Awaitable[None]], *, interval: float, name: str) -> None:
        self.beat = beat
        self.interval = interval
        self.name = name
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start beating, unless already started."""
        if self.task is None:
            self.task = asyncio.create_task(self.beat_forever(), name=self.name)

    async def stop(self) -> None:
        """Stop beating (a beat on its way is cancelled)."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])
            self.task = None

    async def beat_forever(self) -> None:
        """Sleep an interval, beat, and again."""
        while True:
            await asyncio.sleep(self.interval)
            await self.beat()
