"""A protocol-complete Python client: resumes after its last sequence, posts exactly once.

It is what the browser client does, in Python, for fault-injection tests: it reconnects
whenever its socket fails, asks to resume after the last message it holds, and resends every
unacknowledged post under the same client id until the server acknowledges it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import websockets

# Errors after which a post may succeed if sent again (docs/protocol.md).
RETRYABLE = frozenset({"rate_limited", "not_stored"})


@dataclass
class ResumingClient:
    """One participant of a room."""

    ws_url: str
    room: str
    messages: dict[int, str] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # seqs in the order they arrived
    pending: dict[str, str] = field(default_factory=dict)
    connections: int = 0
    # The room's position this client is known to hold everything up to (from `synced`).
    synced_to: int | None = None
    socket: Any = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    # For wss:// URLs, required: how to check the server's certificate.
    ssl_context: ssl.SSLContext | None = None

    @property
    def last_seq(self) -> int:
        return max(self.messages, default=0)

    @property
    def origin(self) -> str:
        return self.ws_url.replace("ws", "http", 1)  # ws:// → http://, wss:// → https://

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop` is set, reconnecting and resuming after any failure."""
        while not stop.is_set():
            position = max(self.last_seq, self.synced_to or 0)
            synced = self.synced_to is not None or self.messages
            query = f"?after={position}" if synced else "?sync=1"
            try:
                async with websockets.connect(
                    f"{self.ws_url}/ws/chat/{self.room}/{query}",
                    origin=self.origin,  # type: ignore[arg-type]
                    open_timeout=5,
                    ssl=self.ssl_context,
                ) as socket:
                    self.socket = socket
                    self.connections += 1
                    self.changed.set()
                    for client_id, text in list(self.pending.items()):
                        await self._send_post(client_id, text)
                    async for raw in socket:
                        self._receive(json.loads(raw))
            except (TimeoutError, OSError, websockets.WebSocketException):
                pass
            finally:
                self.socket = None
            if not stop.is_set():
                await asyncio.sleep(random.uniform(0.05, 0.3))

    async def post(self, text: str) -> None:
        """Post now if connected; in any case keep it pending until acknowledged."""
        client_id = uuid.uuid4().hex
        self.pending[client_id] = text
        await self._send_post(client_id, text)

    async def drop(self) -> None:
        """Close the socket abruptly from the client side, as a flaky network would."""
        if self.socket is not None:
            self.socket.transport.abort()

    async def _send_post(self, client_id: str, text: str) -> None:
        if self.socket is None:
            return
        frame = {"type": "message", "message": text, "client_id": client_id}
        # On failure the post stays pending and is resent after the reconnect.
        with contextlib.suppress(websockets.WebSocketException):
            await self.socket.send(json.dumps(frame))

    def _receive(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "message":
            self._accept(frame)
        elif frame["type"] == "history":
            for message in frame["messages"]:
                self._accept(message)
        elif frame["type"] == "ack":
            self.pending.pop(frame["client_id"], None)
        elif frame["type"] == "synced":
            self.synced_to = max(self.synced_to or 0, frame["last_seq"])
        elif frame["type"] == "error":
            self._refused(frame)
        self.changed.set()

    def _refused(self, error: dict[str, Any]) -> None:
        """As the browser does: resend a post refused for now, drop one refused for good."""
        client_id = error.get("client_id")
        if client_id not in self.pending:
            return
        if error["code"] in RETRYABLE:
            text = self.pending[client_id]
            delay = error.get("retry_after", 1.0)
            asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self._resend(client_id, text))
            )
        else:
            del self.pending[client_id]

    async def _resend(self, client_id: str, text: str) -> None:
        if client_id in self.pending:
            await self._send_post(client_id, text)

    def _accept(self, message: dict[str, Any]) -> None:
        self.order.append(message["seq"])
        self.messages.setdefault(message["seq"], message["message"])
        if "client_id" in message:
            self.pending.pop(message["client_id"], None)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Wait until `condition()` holds, checking whenever this client's state changes."""
        while not condition():
            self.changed.clear()
            await self.changed.wait()
