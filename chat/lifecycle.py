"""The process's open sockets, and its graceful stop: what SIGTERM does under daphne.

On SIGTERM a process (1) stops listening, so new sockets go to the other processes, (2) stops
reading frames, (3) waits until every post already handed to the writer is stored, its poster
acknowledged and its batch published, (4) closes every socket with 1012 ("service restart"),
which browsers answer by reconnecting at once, elsewhere, and resuming with `?after=`, then
(5) stops the reactor, which exits. A post that arrived after (2) was never acknowledged: its
page still holds it and sends it again, by `client_id`, on the new socket.

daphne leaves SIGTERM to Twisted, whose handler stops the reactor at once: daphne then cancels
every application and the sockets see 1006 (abnormal closure), with no acknowledgement for the
batch in flight. `install_under_daphne()` (called by mysite/asgi.py) puts this module's handler
in its place as soon as the reactor runs, on whatever ports daphne was told to listen.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from types import FrameType
from typing import Any, Protocol

from chat.transport import DirectSocket

logger = logging.getLogger(__name__)

# "Service restart" (RFC 6455 registry): the client reconnects at once, to another process.
CLOSE_RESTARTING = 1012
# Posts in flight get this long to be stored, acknowledged and published...
SETTLE_TIMEOUT = 5.0
# ...and sockets this long to finish their close handshake, before the process exits anyway.
CLOSE_TIMEOUT = 2.0
POLL = 0.01


class Drainable(Protocol):
    """A socket as the graceful stop sees it (ChatConsumer)."""

    in_flight: int
    # The daphne connection, when there is one (chat/transport.py).
    direct: DirectSocket | None

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the socket with `code`."""

    def close_soon(self, code: int) -> None:
        """Close the socket with `code`, from code that cannot wait."""


# Every open chat socket of this process (one event loop under daphne).
sockets: set[Drainable] = set()
# True once the process is stopping: frames are no longer read, /readyz answers 503.
draining = False


def opened(socket: Drainable) -> None:
    """A socket was accepted (one that slipped in while stopping is closed at once)."""
    sockets.add(socket)
    if draining:
        socket.close_soon(CLOSE_RESTARTING)


def closed(socket: Drainable) -> None:
    """A socket is gone."""
    sockets.discard(socket)


async def drain() -> None:
    """Settle what is in flight, then close every socket with 1012 (steps 2 to 4 above)."""
    global draining
    draining = True
    started = time.monotonic()
    count = len(sockets)
    settled = await _until(_settled, SETTLE_TIMEOUT)
    published = await _published(SETTLE_TIMEOUT - (time.monotonic() - started))
    await asyncio.gather(*(_close(socket) for socket in list(sockets)), return_exceptions=True)
    gone = await _until(lambda: not sockets, CLOSE_TIMEOUT)
    logger.info(
        "stopping: %d socket(s) closed with 1012 in %.2f s (posts settled: %s, published: %s,"
        " close handshakes done: %s)",
        count,
        time.monotonic() - started,
        settled,
        published,
        gone,
    )


async def _close(socket: Drainable) -> None:
    if socket.direct is None:
        await socket.close(code=CLOSE_RESTARTING)
        return
    # autobahn's sendClose allows only 1000 and 3000-4999 (an application may not claim 1012),
    # so the frame goes out one level down; direct_socket checked sendCloseFrame is there.
    # The client's reply ends the socket as any close does.
    socket.direct.protocol.sendCloseFrame(code=CLOSE_RESTARTING, isReply=False)


def _settled() -> bool:
    from chat.writer import writers

    writer = writers.instances.get(asyncio.get_running_loop())
    queued = writer is not None and bool(writer.queue)
    return not queued and not any(socket.in_flight for socket in sockets)


async def _published(seconds: float) -> bool:
    """Wait until the writer's publisher has sent every batch stored so far."""
    from chat.writer import writers

    writer = writers.instances.get(asyncio.get_running_loop())
    if writer is None or writer.publisher is None or writer.publisher.done():
        return True
    # The publisher takes batches in order and publishes each before taking the next: once it
    # has taken this empty one (which publishes nothing), everything before it was published.
    writer.outbox.put_nowait({})
    return await _until(writer.outbox.empty, max(seconds, POLL))


async def _until(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL)
    return True


# --- Under daphne: SIGTERM ------------------------------------------------------------------


def install_under_daphne() -> None:
    """Take over SIGTERM once daphne's reactor runs (nothing happens under any other server)."""
    if "daphne.server" not in sys.modules or "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor

    reactor.callWhenRunning(_take_sigterm, reactor)


def _take_sigterm(reactor: Any) -> None:
    # Only where Twisted installed its own handler: daphne's runserver with autoreload, and
    # the tests' in-process servers, run without signal handlers and keep the default.
    if signal.getsignal(signal.SIGTERM) != reactor.sigTerm:
        return
    loop = asyncio.get_running_loop() if _loop_running() else asyncio.get_event_loop()
    stopping: list[asyncio.Task[None]] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(begin)

    def begin() -> None:
        if stopping:
            logger.warning("second SIGTERM: stopping now")
            reactor.stop()
            return
        stopping.append(loop.create_task(_stop(reactor), name="chat-graceful-stop"))

    signal.signal(signal.SIGTERM, on_sigterm)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _stop(reactor: Any) -> None:
    from twisted.internet.interfaces import IListeningPort

    logger.info("SIGTERM: no new connections; draining %d socket(s)", len(sockets))
    try:
        for reader in reactor.getReaders():
            if IListeningPort.providedBy(reader):
                reader.stopListening()
        await drain()
    except Exception:
        logger.exception("draining before the stop failed; stopping anyway")
    finally:
        reactor.stop()
