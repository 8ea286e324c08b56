"""Logs: JSON lines from a real daphne (app, Django, access log), no message text, one line per
DisallowedHost, and each socket's lines naming its connection and room."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from chat.consumers import ChatConsumer
from chat.testing.server import DaphneServer
from chat.testing.ws import Connect
from conftest import redis_url_or_skip
from mysite.logging import SocketContext, TextFormatter


def http_get(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


async def post_and_wait_for_ack(ws_url: str, room: str, text: str) -> None:
    async with websockets.connect(
        f"{ws_url}/ws/chat/{room}/?sync=1",
        origin=ws_url.replace("ws://", "http://", 1),  # type: ignore[arg-type]
    ) as socket:
        await socket.send(json.dumps({"type": "message", "message": text, "client_id": "x1"}))
        async with asyncio.timeout(10):
            while json.loads(await socket.recv())["type"] != "ack":
                pass


@pytest.mark.redis
def test_a_daphne_in_json_mode_writes_one_json_object_per_line(tmp_path: Path) -> None:
    server = DaphneServer(
        redis_url=redis_url_or_skip(),
        log_path=tmp_path / "daphne.log",
        extra_env={"CHAT_LOG_FORMAT": "json", "CHAT_LOG_LEVEL": "DEBUG"},
    )
    server.migrate()
    secret = f"never-logged-{uuid.uuid4().hex}"
    server.start()
    try:
        assert http_get(f"{server.http_url}/chat/") == 200
        assert http_get(f"{server.http_url}/healthz") == 200
        assert http_get(f"{server.http_url}/chat/", host="evil.example") == 400
        asyncio.run(post_and_wait_for_ack(server.ws_url, "logged", secret))
    finally:
        server.stop()
    lines = server.log_lines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= record.keys() for record in records)
    access = [record for record in records if record["logger"] == "daphne.access"]
    assert any(record["request"] == "GET /chat/" and record["status"] == 200 for record in access)
    assert any(record["request"].startswith("WSCONNECT /ws/chat/logged/") for record in access)
    assert not any("/healthz" in record["message"] for record in records)
    disallowed = [r for r in records if r["logger"] == "django.security.DisallowedHost"]
    assert len(disallowed) == 1, disallowed
    assert disallowed[0]["level"] == "WARNING"
    assert "exc_info" not in disallowed[0]
    assert not any("Traceback" in line for line in lines)
    assert not any(secret in line for line in lines)
    # The stop is logged too: the log above is the whole life of the process.
    assert any(record["logger"] == "chat.lifecycle" for record in records)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(SocketContext())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collected() -> Iterator[Collect]:
    handler = Collect()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


@pytest.mark.django_db(transaction=True)
async def test_a_sockets_lines_name_its_connection_and_room(
    connect: Connect, collected: Collect, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Any) -> None:
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(ChatConsumer, "typing_started", broken)
    socket = await connect("context-room", query="sync=1")
    await socket.send_json_to({"type": "typing"})
    closed = await socket.receive_output(3)
    while closed["type"] != "websocket.close":
        closed = await socket.receive_output(3)
    logging.getLogger("chat.test").warning("not from a socket")
    (failure,) = [r for r in collected.records if "failed" in r.getMessage()]
    assert re.fullmatch(r"[0-9a-f]{16}", failure.connection)  # type: ignore[attr-defined]
    assert failure.room == "context-room"  # type: ignore[attr-defined]
    (elsewhere,) = [r for r in collected.records if r.getMessage() == "not from a socket"]
    assert not hasattr(elsewhere, "connection")


def test_text_lines_show_the_connection_and_room() -> None:
    record = logging.LogRecord("chat", logging.WARNING, __file__, 1, "slow: %d", (3,), None)
    record.__dict__.update(connection="0123456789abcdef", room="lobby")
    line = TextFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == "WARNING chat: slow: 3 [connection=0123456789abcdef room=lobby]"
