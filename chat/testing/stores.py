"""Helpers for tests of the chat's own stores (limits, presence), in memory and on Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import pytest


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


def unique(name: str) -> str:
    """A key prefix, room, person or address no other test (or earlier run) has used."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


def store_url(request: pytest.FixtureRequest) -> str:
    """The store of a test parametrised "memory" / "redis": memory:// or a real Redis."""
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url"))


async def wait_until(condition: Callable[[], Awaitable[bool]], *, within: float) -> float:
    """Poll a condition of a store (no event tells of an expiry); return how long it took."""
    start = time.monotonic()
    async with asyncio.timeout(within):
        while True:
            if await condition():
                return time.monotonic() - start
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def builder(factory: Callable[..., C], **defaults: Any) -> AsyncIterator[Callable[..., C]]:
    """Build stores with these default options; every one built is closed at the end."""
    made: list[C] = []

    def build(**options: Any) -> C:
        made.append(factory(**{**defaults, **options}))
        return made[-1]

    try:
        yield build
    finally:
        for store in made:
            await store.close()
