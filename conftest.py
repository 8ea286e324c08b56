"""Fixtures shared by every test tier."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.db import connections
from django.test import override_settings

from chat.db import db_sync_to_async, readers
from chat.fanout import hubs
from chat.roster import rosters
from chat.testing.redis_server import RedisUnavailable, shared_redis_url
from chat.throttle import throttles
from chat.writer import writers
from mysite.settings import channel_layers_config

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def redis_url_or_skip() -> str:
    """A Redis to test against; outside CI a machine without one skips, under CI it fails."""
    try:
        return shared_redis_url()
    except RedisUnavailable as error:
        if IN_CI:
            raise
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a real Redis server that tests may flush."""
    return redis_url_or_skip()


@pytest.fixture(params=["memory", "redis"])
async def layer(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Run the test once on the in-memory channel layer and once on a real Redis."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    with override_settings(CHANNEL_LAYERS=channel_layers_config(url)):
        yield request.param
        # Stop this loop's hub and writer, and leave no groups or channels behind.
        for service in (rosters.pop(), hubs.pop(), writers.pop(), throttles.pop()):
            if service is not None:
                await service.close()
        await get_channel_layer().flush()
        # The connections the chat keeps open (chat/db.py), on the writer's thread and the
        # readers': PostgreSQL refuses to drop a test database while a session is connected.
        await db_sync_to_async(connections.close_all)()
        readers.close_connections()


@pytest.fixture(autouse=True)
def _known_hosts(settings: Any) -> None:
    """The same ALLOWED_HOSTS whatever the developer's environment says."""
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]


@pytest.fixture(autouse=True)
def _limits_off(settings: Any) -> None:
    """Rate limits off, as in the benchmarks: tests of other behaviours post in bursts.

    The tests of the limits themselves (chat/tests/test_limits.py) turn them back on.
    """
    settings.CHAT_LIMITS_ENABLED = False
