"""The socket underneath a consumer, and frames encoded once for every socket that gets them.

Channels' session middleware wraps `send` to save sessions; the hub's deliveries need none of
that, so they go through the server's own `send`, which `ServerSendMiddleware` (outermost in
mysite/asgi.py) puts in the scope. Under daphne that `send` also leads to the connection's
autobahn protocol, which gives two things ASGI does not:

- autobahn's prepared messages (its broadcast API): a message is framed once
  (`OutFrame.prepared`) and the same bytes go to every socket, where ASGI would frame it, and
  encode it to UTF-8, once per socket; and the frames of a batch go to a socket in one write.
  In a room of 100 that was most of the cost of a delivery (docs/benchmarks.md).
- the Twisted transport's write buffer, which tells how far behind a socket's reader is, so
  one that stops reading is dropped before its backlog grows without bound.

Under any other ASGI server `direct_socket` returns None and the consumer uses plain ASGI sends.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from autobahn.websocket.protocol import PreparedMessage  # daphne's WebSocket library

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Any, Send], Awaitable[None]]

SCOPE_KEY = "chat.server_send"
# Bytes a socket may have waiting in the server's write buffer (beyond what the kernel took)
# because its reader is not reading. Past this the socket is dropped; the client reconnects and
# resumes from the database, so the limit costs it nothing but a reconnect.
SLOW_READER_LIMIT = 1024 * 1024
# A socket's own catch-up (history, resume) waits for its buffer to drain below this instead:
# only that socket's task waits, and only this long before the socket counts as gone.
CATCH_UP_LOW_WATER = SLOW_READER_LIMIT // 4
CATCH_UP_DRAIN_TIMEOUT = 30.0
# Twisted's producer slot on the transport is daphne's, so draining is polled at this period.
DRAIN_POLL = 0.005


class ServerSendMiddleware:
    """Puts the server's `send` for a websocket into its scope, under SCOPE_KEY.

    Outermost, so the scope is the one the server made for this connection alone: the key is
    added in place rather than to a copy, and the inner application's awaitable is returned
    rather than awaited here. Both save memory on every open socket (docs/benchmarks.md).
    """

    # A plain (not async) __call__ would pass for an ASGI 2 application without this hint.
    _asgi_single_callable = True

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Any, send: Send) -> Awaitable[None]:
        if scope["type"] == "websocket":
            scope[SCOPE_KEY] = send
        return self.app(scope, receive, send)


class OutFrame:
    """A message frame for many sockets: its text, and its WebSocket framing, made once."""

    __slots__ = ("_prepared", "seq", "text")

    def __init__(self, seq: int, text: str) -> None:
        self.seq = seq
        self.text = text
        self._prepared: Any = None

    @property
    def prepared(self) -> Any:
        """The autobahn PreparedMessage (server frames are never masked)."""
        if self._prepared is None:
            self._prepared = PreparedMessage(self.text.encode(), False, False, False)
        return self._prepared


def joined_payload(frames: list[OutFrame]) -> bytes:
    """The WebSocket bytes of consecutive frames, as one write."""
    return b"".join(frame.prepared.payloadHybi for frame in frames)


class DirectSocket:
    """A daphne WebSocket connection, reached past ASGI for prepared sends and flow control."""

    __slots__ = ("limit", "protocol", "transport")

    def __init__(self, protocol: Any, limit: int = SLOW_READER_LIMIT) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.limit = limit

    def send(self, frames: list[OutFrame], payload: bytes | None = None) -> None:
        """Write frames (`payload`: their bytes joined, if the caller has them) in one write.

        A socket that is closing gets nothing; one whose reader is too far behind is dropped.
        """
        protocol = self.protocol
        if protocol.state != protocol.STATE_OPEN:
            return
        if self.buffered() > self.limit:
            # A close frame would only queue behind the backlog: abort the connection.
            self.transport.abortConnection()
            return
        if protocol._perMessageCompress is not None:
            # Compressed per socket (daphne does not offer it, but a subclass might).
            for frame in frames:
                protocol.sendPreparedMessage(frame.prepared)
            return
        # Several frames in one TCP write: one trip through Twisted per socket per batch.
        protocol.sendData(payload if payload is not None else joined_payload(frames))

    async def drained(self) -> None:
        """Wait until the buffer is below CATCH_UP_LOW_WATER; abort the socket if it never is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_DRAIN_TIMEOUT
        while (
            self.buffered() > CATCH_UP_LOW_WATER and self.protocol.state == self.protocol.STATE_OPEN
        ):
            if loop.time() > deadline:
                self.transport.abortConnection()
                return
            await asyncio.sleep(DRAIN_POLL)

    def buffered(self) -> int:
        """Bytes written that the kernel has not taken yet.

        Twisted's flow control (a registered producer) is taken by daphne's HTTP channel, so
        this reads `FileDescriptor`'s write buffer: `dataBuffer` from `offset` on, plus writes
        not yet joined into it (`_tempDataLen`).
        """
        transport = self.transport
        return (
            len(getattr(transport, "dataBuffer", b""))
            - getattr(transport, "offset", 0)
            + getattr(transport, "_tempDataLen", 0)
        )


def direct_socket(send: Send) -> DirectSocket | None:
    """The daphne connection behind a server `send`, or None under another server."""
    if not isinstance(send, functools.partial) or not send.args:
        return None
    protocol = send.args[0]
    if hasattr(protocol, "sendPreparedMessage") and hasattr(protocol, "transport"):
        return DirectSocket(protocol)
    return None
