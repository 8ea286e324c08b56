"""/metrics: who may read it, and that each count moves when what it counts happens."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from chat import fanout, services
from chat.testing.http import asgi_get
from chat.testing.ws import Connect, receive
from chat.transport import AsgiSocket

pytestmark = [pytest.mark.django_db(transaction=True)]

LOOPBACK = ("127.0.0.1", 40000)
ELSEWHERE = ("203.0.113.9", 40000)


async def scrape(
    client: tuple[str, int] = LOOPBACK, authorization: bytes | None = None
) -> tuple[int, str]:
    """(status, body) of GET /metrics from `client`."""
    headers = [(b"host", b"127.0.0.1:8000")]
    if authorization is not None:
        headers.append((b"authorization", authorization))
    status, body = await asgi_get("/metrics", client=client, headers=headers)
    return status, body.decode()


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_loopback_only_without_a_token(settings: Any) -> None:
    settings.CHAT_METRICS_TOKEN = ""
    status, body = await scrape(LOOPBACK)
    assert status == 200
    names = {family.name for family in text_string_to_metric_families(body)}
    assert {"chat_open_sockets", "chat_posts", "chat_store_to_write_seconds"} <= names
    assert (await scrape(("::1", 40000)))[0] == 200
    assert (await scrape(ELSEWHERE))[0] == 403


async def test_a_token_is_required_from_everywhere_once_set(settings: Any) -> None:
    settings.CHAT_METRICS_TOKEN = "s3cret-token"
    assert (await scrape(LOOPBACK))[0] == 401
    assert (await scrape(ELSEWHERE, b"Bearer wrong"))[0] == 401
    assert (await scrape(ELSEWHERE, b"Bearer s3cret-token"))[0] == 200
    assert (await scrape(LOOPBACK, b"Bearer s3cret-token"))[0] == 200


async def test_posts_batches_deliveries_latency_and_sockets_are_counted(connect: Connect) -> None:
    room = f"metrics-{uuid.uuid4().hex[:8]}"
    stored, batches = (
        value("chat_posts_total", outcome="stored"),
        value("chat_commit_batch_posts_count"),
    )
    live, latencies = (
        value("chat_frames_delivered_total", path="live"),
        value("chat_store_to_write_seconds_count"),
    )
    sockets = value("chat_open_sockets")
    poster = await connect(room, query="sync=1")
    reader = await connect(room, query="sync=1")
    assert value("chat_open_sockets") == sockets + 2
    assert value("chat_local_rooms") >= 1
    for frame in (await receive(poster), await receive(reader)):
        assert frame["type"] == "synced"
    for n in range(3):
        await poster.send_json_to({"message": f"m{n}", "client_id": f"c{n}"})
    seen = [await receive(reader) for _ in range(3)]
    assert [frame["seq"] for frame in seen] == [1, 2, 3]
    assert value("chat_posts_total", outcome="stored") == stored + 3
    # The same post again is a resend: acknowledged, counted apart, not stored twice.
    duplicates = value("chat_posts_total", outcome="duplicate")
    await poster.send_json_to({"message": "m0", "client_id": "c0"})
    while value("chat_posts_total", outcome="duplicate") == duplicates:
        await receive(poster)
    assert value("chat_posts_total", outcome="stored") == stored + 3
    assert value("chat_commit_batch_posts_count") >= batches + 2
    # Three frames to each of two sockets.
    assert value("chat_frames_delivered_total", path="live") == live + 6
    assert value("chat_store_to_write_seconds_count") > latencies
    await poster.disconnect()
    assert value("chat_open_sockets") == sockets + 1


async def test_catch_up_and_error_frames_are_counted(connect: Connect) -> None:
    room = f"metrics-{uuid.uuid4().hex[:8]}"
    poster = await connect(room, query="sync=1")
    await receive(poster)
    for n in range(3):
        await poster.send_json_to({"message": f"m{n}", "client_id": f"c{n}"})
    for _ in range(6):  # three acks, three messages
        await receive(poster)
    caught_up = value("chat_frames_delivered_total", path="catch_up")
    resumed = await connect(room, query="after=1")
    assert [(await receive(resumed))["seq"] for _ in range(2)] == [2, 3]
    assert value("chat_frames_delivered_total", path="catch_up") == caught_up + 2
    bad_json = value("chat_error_frames_total", code="bad_json")
    await resumed.send_to(text_data="{not json")
    while (frame := await receive(resumed))["type"] != "error":
        pass
    assert frame["code"] == "bad_json"
    assert value("chat_error_frames_total", code="bad_json") == bad_json + 1


async def test_rate_limit_refusals_are_counted(connect: Connect, settings: Any) -> None:
    settings.CHAT_LIMITS_ENABLED = True
    settings.CHAT_LIMITS_STORAGE = "memory://"
    settings.CHAT_LIMIT_POSTS_PER_PERSON = "1/minute"
    settings.CHAT_LIMIT_POSTS_PER_ADDRESS = "100/minute"
    settings.CHAT_LIMIT_NEW_ROOMS_PER_ADDRESS = "100/minute"
    settings.CHAT_LIMIT_HANDSHAKES_PER_ADDRESS = "100/minute"
    refused = value("chat_rate_limit_refusals_total", what="post")
    socket = await connect(f"metrics-{uuid.uuid4().hex[:8]}", query="sync=1")
    await receive(socket)
    await socket.send_json_to({"message": "first", "client_id": "a"})
    await socket.send_json_to({"message": "second", "client_id": "b"})
    frames = [await receive(socket) for _ in range(3)]
    assert any(frame.get("code") == "rate_limited" for frame in frames), frames
    assert value("chat_rate_limit_refusals_total", what="post") == refused + 1


async def test_the_reconcile_and_gap_fills_are_counted(connect: Connect) -> None:
    room = f"metrics-{uuid.uuid4().hex[:8]}"
    socket = await connect(room, query="sync=1")
    await receive(socket)
    await socket.send_json_to({"message": "first", "client_id": "a"})
    while (await receive(socket)).get("type") != "message":
        pass
    # Stored without a publish (as when Redis lost it): only the reconcile finds it.
    await database_sync_to_async(store_directly)(room, "unpublished")
    reconciles = value("chat_reconcile_catch_ups_total")
    await fanout.hubs.get().reconcile()
    assert (await receive(socket))["message"] == "unpublished"
    assert value("chat_reconcile_catch_ups_total") == reconciles + 1
    # A batch that starts past the next seq: the hub fills the gap from the database first.
    await database_sync_to_async(store_directly)(room, "skipped")
    fills = value("chat_gap_fills_total")
    await socket.send_json_to({"message": "after the gap", "client_id": "b"})
    texts: list[str] = []
    while len(texts) < 2:
        frame = await receive(socket)
        if frame.get("type") == "message":
            texts.append(frame["message"])
    assert texts == ["skipped", "after the gap"]
    assert value("chat_gap_fills_total") == fills + 1


def store_directly(room: str, text: str) -> None:
    room_id = services.room_get_or_create(name=room).pk
    services.messages_create(
        [
            services.NewPost(
                room_name=room,
                room_id=room_id,
                author=None,
                author_name="someone",
                body=text,
                client_id=None,
            )
        ]
    )


async def test_a_slow_reader_dropped_is_counted() -> None:
    never = asyncio.Event()

    async def stuck_send(message: dict[str, Any]) -> None:
        await never.wait()  # a reader that never takes anything

    dropped = value("chat_slow_readers_dropped_total")
    socket = AsgiSocket(stuck_send, limit=100)
    for _ in range(10):
        socket.send_text("x" * 50)
    assert socket.closed
    assert value("chat_slow_readers_dropped_total") == dropped + 1
    socket.close()
