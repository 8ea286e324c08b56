"""The socket underneath a consumer, and frames encoded once for every socket that gets them.

A consumer is handed the server's own `send` (chat/entry.py wraps nothing around it). Under
daphne that `send` also leads to the connection's autobahn protocol, which gives two things
ASGI does not:

- the connection's Twisted transport, to write framed bytes to: a message is framed once
  (`OutFrame.framed`, as autobahn's prepared messages would) and the same bytes go to every
  socket, where ASGI would frame it, and encode it to UTF-8, once per socket; and the frames
  of a batch go to a socket in one write. In a room of 100 that was most of the cost of a
  delivery (docs/benchmarks.md). Replies (acks, errors) are framed the same way rather than
  through autobahn's `sendMessage`.
- the Twisted transport's write buffer, which tells how far behind a socket's reader is, so
  one that stops reading is dropped before its backlog grows without bound.

Neither is public API: they are attributes of daphne, autobahn and Twisted objects. One guard,
`direct_socket`, checks every one of them (PROTOCOL_SHAPES, TRANSPORT_SHAPES, and autobahn's
framing) when a socket connects; if an upgrade changed one, it says which in a warning, once per
process, and the socket sends through `AsgiSocket` instead of misbehaving. requirements.txt pins
the versions chat/tests/test_transport.py checked them on.

Under any other ASGI server (and in tests) `AsgiSocket` does the same job with plain ASGI sends:
an ordered outbox per socket, drained by a task that exists only while there is something to
send, bounded by the same limit. Every frame a socket is sent — live messages, history, acks,
errors — goes through one of the two, so no reply escapes the slow-reader limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final, Literal, Protocol

from autobahn.websocket.protocol import PreparedMessage  # daphne's WebSocket library

from chat import metrics

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

logger = logging.getLogger(__name__)

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
# A close waits this long at most for the frames queued before it (a reader may not read).
FLUSH_TIMEOUT = 5.0
# Closes a socket under a plain ASGI server whose reader fell SLOW_READER_LIMIT behind (under
# daphne the connection is aborted instead: a close frame would queue behind the backlog).
CLOSE_SLOW_READER = 4008


def text_frame(data: bytes) -> bytes:
    """`data` (UTF-8) as one unmasked, unfragmented WebSocket text frame (RFC 6455, 5.2).

    What a server sends: FIN and opcode 1, then the length in 7 bits, or 126 and 16 bits, or
    127 and 64 bits, then the payload. autobahn's `sendMessage` builds the same bytes in more
    steps; chat/tests/test_transport.py compares the two.
    """
    length = len(data)
    if length < 126:
        return b"\x81" + bytes((length,)) + data
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big") + data
    return b"\x81\x7f" + length.to_bytes(8, "big") + data


class OutFrame:
    """A message frame for many sockets: its text, and its WebSocket framing, made once."""

    __slots__ = ("_framed", "_prepared", "plain", "seq", "text")

    def __init__(self, seq: int, text: str, *, plain: bool = True) -> None:
        self.seq = seq
        self.text = text
        # False for what only clients that speak the protocol are sent (edits, deletes): the
        # tutorial's client would show any frame's `message` as a new line.
        self.plain = plain
        self._framed: bytes | None = None
        self._prepared: Any = None

    @property
    def framed(self) -> bytes:
        """The frame's bytes on the wire (server frames are never masked)."""
        if self._framed is None:
            self._framed = text_frame(self.text.encode())
        return self._framed

    @property
    def prepared(self) -> Any:
        """The autobahn PreparedMessage, for a connection that compresses its frames."""
        if self._prepared is None:
            self._prepared = PreparedMessage(self.text.encode(), False, False, False)
        return self._prepared


def joined_payload(frames: list[OutFrame]) -> bytes:
    """The WebSocket bytes of consecutive frames, as one write."""
    return b"".join([frame.framed for frame in frames])


def utf8(text: str) -> bytes:
    """`text` as UTF-8, even if a lone surrogate slipped past validation (escaped, as JSON)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        logger.error("a frame held a lone surrogate; sent escaped")
        return text.encode("utf-8", "backslashreplace")


class Socket(Protocol):
    """Where a consumer's frames go: `DirectSocket` under daphne, `AsgiSocket` otherwise."""

    def send(self, frames: list[OutFrame], payload: bytes | None = None) -> None:
        """Queue message frames (`payload`: their bytes joined, if the caller has them)."""

    def send_text(self, text: str) -> None:
        """Queue one text frame (a reply: ack, error, history, synced)."""

    async def drained(self) -> None:
        """Wait until this socket's reader has caught up (or the socket is dropped)."""

    def buffered(self) -> int:
        """Bytes sent that the reader has not taken yet."""

    async def flush(self) -> None:
        """Wait (briefly) until what is queued is handed to the server, before a close."""

    def close(self) -> None:
        """Stop sending; drop whatever is queued."""


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
        if not self._writable():
            return
        protocol = self.protocol
        if protocol._perMessageCompress is not None:
            # Compressed per socket (daphne does not offer it, but a subclass might).
            for frame in frames:
                protocol.sendPreparedMessage(frame.prepared)
            return
        # Several frames in one TCP write: one trip through Twisted per socket per batch.
        self._write(payload if payload is not None else joined_payload(frames))

    def send_text(self, text: str) -> None:
        """Write one text frame, under the same slow-reader limit as live messages."""
        if self._writable():
            if self.protocol._perMessageCompress is not None:
                self.protocol.sendMessage(utf8(text), False)
            else:
                self._write(text_frame(utf8(text)))

    def _write(self, data: bytes) -> None:
        """Framed bytes to the socket: to Twisted's transport, as autobahn's `sendData` does.

        Straight to the transport unless autobahn holds bytes of its own waiting in its send
        queue (only for "synchronous" or chopped sends, which daphne never makes), so the
        order of the bytes is the order of the calls either way. Skipped with `sendData`: its
        debug line and traffic counters, which nothing under daphne reads.
        """
        if self.protocol.send_queue:
            self.protocol.sendData(data)
        else:
            self.transport.write(data)

    def _writable(self) -> bool:
        """False if the socket is closing, or its reader is too far behind (then dropped)."""
        if self.protocol.state != self.protocol.STATE_OPEN:
            return False
        if self.buffered() > self.limit:
            # A close frame would only queue behind the backlog: abort the connection.
            metrics.slow_reader_dropped()
            self.transport.abortConnection()
            return False
        return True

    async def drained(self) -> None:
        """Wait until the buffer is below CATCH_UP_LOW_WATER; abort the socket if it never is."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CATCH_UP_DRAIN_TIMEOUT
        while (
            self.buffered() > CATCH_UP_LOW_WATER and self.protocol.state == self.protocol.STATE_OPEN
        ):
            if loop.time() > deadline:
                metrics.slow_reader_dropped()
                self.transport.abortConnection()
                return
            await asyncio.sleep(DRAIN_POLL)

    def buffered(self) -> int:
        """Bytes written that the kernel has not taken yet.

        Twisted's flow control (a registered producer) is taken by daphne's HTTP channel, so
        this reads `FileDescriptor`'s write buffer: `dataBuffer` from `offset` on, plus writes
        not yet joined into it (`_tempDataLen`). `direct_socket` made sure all three are there.
        """
        transport = self.transport
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    async def flush(self) -> None:
        """Nothing to wait for: frames are in Twisted's buffer, ahead of any close frame."""

    def close(self) -> None:
        """Nothing to drop: Twisted owns the buffer, and closes it with the connection."""


class AsgiSocket:
    """Plain ASGI sends in order, from an outbox bounded like daphne's write buffer."""

    __slots__ = ("_drained", "closed", "limit", "outbox", "pending", "send_event", "task")

    def __init__(self, send: Send, limit: int = SLOW_READER_LIMIT) -> None:
        self.send_event = send
        self.limit = limit
        self.outbox: deque[str] = deque()
        self.pending = 0  # bytes (characters) in the outbox
        self.task: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self.closed = False

    def send(self, frames: list[OutFrame], payload: bytes | None = None) -> None:
        """Queue message frames."""
        for frame in frames:
            self.send_text(frame.text)

    def send_text(self, text: str) -> None:
        """Queue one frame; a reader too far behind is closed instead."""
        if self.closed:
            return
        if self.pending > self.limit:
            metrics.slow_reader_dropped()
            self.close()
            self.task = asyncio.ensure_future(self._send_close())
            return
        self.outbox.append(text)
        self.pending += len(text)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self.outbox:
                text = self.outbox.popleft()
                self.pending -= len(text)
                await self.send_event({"type": "websocket.send", "text": text})
                if self._drained is not None and self.pending <= CATCH_UP_LOW_WATER:
                    self._drained.set()
        except Exception as error:  # the connection went away under us
            logger.debug("sending to a socket failed: %r", error)
            self.close()

    async def _send_close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send_event({"type": "websocket.close", "code": CLOSE_SLOW_READER})

    async def drained(self) -> None:
        """Wait until the outbox is below CATCH_UP_LOW_WATER."""
        while self.pending > CATCH_UP_LOW_WATER and not self.closed:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), CATCH_UP_DRAIN_TIMEOUT)
            except TimeoutError:
                metrics.slow_reader_dropped()
                self.close()
            finally:
                self._drained = None

    def buffered(self) -> int:
        """Characters queued and not yet handed to the server."""
        return self.pending

    async def flush(self) -> None:
        """Wait until the outbox is handed to the server, so a close frame comes after it."""
        if self.task is not None and not self.task.done() and self.task is not _current_task():
            await asyncio.wait([self.task], timeout=FLUSH_TIMEOUT)

    def close(self) -> None:
        """Drop the outbox; send nothing more."""
        self.closed = True
        self.outbox.clear()
        self.pending = 0
        if self._drained is not None:
            self._drained.set()
        if self.task is not None and not self.task.done() and self.task is not _current_task():
            self.task.cancel()


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


# What the direct path uses of daphne's connection (an autobahn WebSocketServerProtocol) and of
# its Twisted transport (a tcp.Server), with the kind each must be: METHOD (called), or the type
# of the value (read; `object`: only present). `direct_socket` checks both on every connection.
METHOD: Final = "method"
Shapes = Mapping[str, type | Literal["method"]]
PROTOCOL_SHAPES: Shapes = {
    "sendPreparedMessage": METHOD,
    "sendData": METHOD,
    "sendMessage": METHOD,
    "sendCloseFrame": METHOD,  # chat/lifecycle.py: 1012, which autobahn's sendClose refuses
    "state": int,
    "STATE_OPEN": int,
    "_perMessageCompress": object,  # None unless compression was negotiated
    "send_queue": deque,  # autobahn's own bytes waiting to be written (empty under daphne)
}
TRANSPORT_SHAPES: Shapes = {
    "dataBuffer": bytes,
    "offset": int,
    "_tempDataLen": int,
    "abortConnection": METHOD,
    "write": METHOD,
}
# An unmasked text frame of "ok", as RFC 6455 lays it out (FIN + opcode 1, length 2).
_FRAMED_OK = b"\x81\x02ok"
_absent = object()
_fallback_logged = False


def direct_socket(send: Send) -> DirectSocket | None:
    """The daphne connection behind a server `send`, or None to send through plain ASGI.

    The one guard of the direct path, run once per socket at connect. A `send` from another
    server (or a test's communicator) gets None quietly; one from daphne gets None, and a warning
    once per process, if anything the direct path relies on has changed shape.
    """
    if not _from_daphne(send):
        return None
    if isinstance(send, functools.partial) and send.args:
        changed = _changed_shape(send.args[0])
        if changed is None:
            return DirectSocket(send.args[0])
    else:
        changed = "its send is no longer a functools.partial over the connection"
    _log_fallback(changed)
    return None


def _from_daphne(send: Send) -> bool:
    """True if `send` is daphne's, whatever shape it has taken."""
    function = send.func if isinstance(send, functools.partial) else send
    return (getattr(function, "__module__", None) or "").startswith("daphne.")


def _changed_shape(protocol: Any) -> str | None:
    """What daphne's connection lacks of what the direct path uses, or None if nothing."""
    lack = _lacks(protocol, PROTOCOL_SHAPES)
    if lack is not None:
        return f"the connection ({_kind(protocol)}) {lack}"
    transport = getattr(protocol, "transport", None)
    lack = _lacks(transport, TRANSPORT_SHAPES)
    if lack is not None:
        return f"the connection's transport ({_kind(transport)}) {lack}"
    if not _frames_as_rfc6455():
        return "autobahn's PreparedMessage no longer frames text as RFC 6455 does"
    return None


def _lacks(target: object, shapes: Shapes) -> str | None:
    for name, kind in shapes.items():
        value = getattr(target, name, _absent)
        if value is _absent:
            return f"has no {name}"
        if isinstance(kind, str):  # METHOD
            if not callable(value):
                return f"has a {name} that is not a method"
        elif not isinstance(value, kind):
            return f"has a {name} of type {_kind(value)}, not {kind.__name__}"
    return None


def _kind(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


@functools.cache
def _frames_as_rfc6455() -> bool:
    try:
        return PreparedMessage(b"ok", False, False, False).payloadHybi == _FRAMED_OK
    except Exception:
        return False


def _log_fallback(changed: str) -> None:
    global _fallback_logged
    if _fallback_logged:
        return
    _fallback_logged = True
    # AsgiSocket's outbox never fills under daphne, whose send takes everything at once.
    logger.warning(
        "daphne's connection is not the shape chat/transport.py relies on: %s. Sockets send "
        "through plain ASGI instead: slower, and one whose reader stops is no longer dropped. "
        "Compare the installed daphne, autobahn and Twisted with requirements.txt, and run "
        "chat/tests/test_transport.py.",
        changed,
    )
