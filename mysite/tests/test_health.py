"""/healthz and /readyz: in-process against a Redis that is stopped, and a real daphne whose
database cannot be reached."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from chat.testing.http import asgi_get
from chat.testing.redis_server import RedisServer
from chat.testing.server import DaphneServer
from conftest import redis_url_or_skip
from mysite.settings import channel_layers_config


async def get(path: str) -> tuple[int, bytes]:
    # The Host is a load balancer's view of the process, which is not in ALLOWED_HOSTS.
    return await asgi_get(path, headers=[(b"host", b"10.1.2.3:8001")])


async def test_healthz_answers_whatever_the_host() -> None:
    # The Host is a load balancer's view of the process (not in ALLOWED_HOSTS): still 200.
    assert await get("/healthz") == (200, b"ok\n")


@pytest.mark.django_db(transaction=True)
async def test_readyz_ready_with_database_and_layer() -> None:
    status, body = await get("/readyz")
    assert status == 200
    assert json.loads(body) == {
        "status": "ready",
        "checks": {"database": "ok", "channel_layer": "ok"},
        "failed": [],
    }


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test may stop (skipped where there is none, failed under CI)."""
    redis_url_or_skip()
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
async def test_readyz_names_a_stopped_redis_and_recovers(own_redis: RedisServer) -> None:
    with override_settings(CHANNEL_LAYERS=channel_layers_config(own_redis.url)):
        assert (await get("/readyz"))[0] == 200
        own_redis.stop()
        status, body = await get("/readyz")
        answer = json.loads(body)
        assert status == 503
        assert answer["status"] == "unready"
        assert answer["failed"] == ["channel_layer"]
        assert answer["checks"]["database"] == "ok"
        assert "Error" in answer["checks"]["channel_layer"]
        # Liveness is not readiness: the process still serves.
        assert (await get("/healthz"))[0] == 200
        own_redis.start()
        assert (await get("/readyz"))[0] == 200


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.mark.redis
def test_readyz_names_an_unreachable_database_and_probes_are_not_logged(
    tmp_path: Path,
) -> None:
    # A database file in a directory that does not exist: SQLite cannot open it.
    server = DaphneServer(
        redis_url=redis_url_or_skip(),
        database=tmp_path / "missing" / "chat.sqlite3",
        log_path=tmp_path / "daphne.log",
    ).start()
    try:
        for _ in range(5):
            assert http_get(f"{server.http_url}/healthz")[0] == 200
            status, body = http_get(f"{server.http_url}/readyz")
            answer = json.loads(body)
            assert status == 503
            assert answer["failed"] == ["database"]
            assert answer["checks"]["channel_layer"] == "ok"
            assert answer["checks"]["database"].startswith("OperationalError")
        # A page that is logged, so the log below is known to be written.
        http_get(f"{server.http_url}/chat/")
    finally:
        server.stop()
    lines = server.log_lines()
    assert any('"GET /chat/"' in line for line in lines), lines
    assert not any("/healthz" in line or "/readyz" in line for line in lines), lines
    # Five failed probes, one line saying so.
    assert sum("not ready: database" in line for line in lines) == 1, lines
