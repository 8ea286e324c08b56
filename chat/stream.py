"""One socket's view of its room: every stored message once, in sequence order.

A socket is first sent the history (or everything after `?after=N`) read from the database,
then the live messages the process's hub (chat/fanout.py) hands it. While the history is being
read, the hub's deliveries wait in a backlog; afterwards those the history already covered are
skipped. A live delivery that skips a number sends the stream back to the database for what is
missing, in a task of its own. `MessageStream` knows nothing of ASGI: it writes to a `Socket`
and reads rows through the function it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from chat import metrics, protocol
from chat.runtime import PerLoop
from chat.selectors import MessageRow
from chat.transport import OutFrame, Socket

logger = logging.getLogger(__name__)

# Catch-up after a reconnect is read in pages of this many messages...
CATCH_UP_PAGE = 200
# ...and encoded and written in slices of this many, one slice per turn of the event loop for
# the whole process: however many sockets catch up at once, everyone else's frames wait for at
# most one slice (docs/benchmarks.md, "Fair catch-up").
CATCH_UP_SLICE = 50
# Live messages held for a socket still reading its history, at most. Past this they are
# dropped and read from the database again, so a slow catch-up in a busy room stays bounded.
MAX_BACKLOG = 1000

# Taken by a catch-up slice across a turn of the event loop (see CATCH_UP_SLICE).
catch_up_turns: PerLoop[asyncio.Lock] = PerLoop(asyncio.Lock)

# Reads up to `limit` stored messages after a sequence number: (after, limit) → rows.
RowsAfter = Callable[[int, int], Awaitable[list[MessageRow]]]


def encode(message: MessageRow) -> str:
    """The text of a stored event's frame (a post, an edit or a delete)."""
    return protocol.encode(protocol.stored_frame(message))


def out_frame(message: MessageRow) -> OutFrame:
    """A stored event, ready for sockets (see `OutFrame.plain`)."""
    return OutFrame(message.seq, encode(message), plain=protocol.shown_to_tutorial_clients(message))


class MessageStream:
    """The ordering of one socket's messages: history or catch-up, backlog, then live."""

    def __init__(self, rows_after: RowsAfter, *, room_name: str = "") -> None:
        self.rows_after = rows_after
        self.room_name = room_name
        # The last sequence number this socket was sent.
        self.last_seq = 0
        # Until the history is sent (and while a gap is being filled), deliveries wait here.
        self.live = False
        self.backlog: list[OutFrame] = []
        self.backlog_overflowed = False
        self.socket: Socket | None = None
        self.resyncing: asyncio.Future[None] | None = None
        # A tutorial client (no `?sync=1` or `?after=`): sent posts only, never edits, deletes
        # or deleted posts. Its position still moves past them.
        self.plain_only = False

    def attach(self, socket: Socket) -> None:
        """Start writing to `socket` (once the handshake is accepted)."""
        self.socket = socket

    def resume_after(self, seq: int) -> None:
        """The client holds everything up to `seq`: send only what follows."""
        self.last_seq = seq

    async def go_live(self) -> None:
        """Send what waited in the backlog; from then on, deliveries are written at once."""
        await self.drain_backlog()
        # No await since drain_backlog's last check: nothing can slip into the backlog unseen.
        self.live = True

    def deliver(self, frames: list[OutFrame], payload: bytes | None, changes: bool = False) -> None:
        """From the hub: the room's next messages (and their bytes joined, under daphne);
        `changes` if some are not `plain` (edits, deletes)."""
        if not self.live:
            if len(self.backlog) + len(frames) <= MAX_BACKLOG:
                self.backlog.extend(frames)
            else:
                self.backlog.clear()
                self.backlog_overflowed = True
            return
        if frames[0].seq != self.last_seq + 1:
            # Not exactly the next ones (this socket's own catch-up ran ahead): keep the new.
            frames = [frame for frame in frames if frame.seq > self.last_seq]
            payload = None
            if not frames:
                return
            if frames[0].seq > self.last_seq + 1:
                # The hub hands out consecutive messages, so this should not happen; if it
                # does, the database has what is missing: go back to catching up.
                logger.warning("socket in room %s missed messages; catching up", self.room_name)
                self.live = False
                self.backlog.extend(frames)
                # In a task of its own: the hub must not wait on one socket's database read.
                self.resyncing = asyncio.ensure_future(self.go_live())
                return
        assert self.socket is not None, "live before attached"
        self.last_seq = frames[-1].seq
        if changes and self.plain_only:
            frames, payload = [frame for frame in frames if frame.plain], None
            if not frames:
                return
        self.socket.send(frames, payload)

    async def drain_backlog(self) -> None:
        """Send what the hub delivered while this socket was reading its history."""
        while self.backlog or self.backlog_overflowed:
            if self.backlog_overflowed:
                self.backlog_overflowed = False
                await self.catch_up()
                continue
            backlog, self.backlog = self.backlog, []
            if backlog[0].seq > self.last_seq + 1:
                await self.catch_up(to_seq=backlog[0].seq - 1)
            await self.send_stored(backlog)

    async def catch_up(
        self, *, to_seq: int | None = None, first: list[MessageRow] | None = None
    ) -> None:
        """Send the stored messages after `last_seq`, up to `to_seq` (or the latest); `first`,
        if given, is the first page (CATCH_UP_PAGE rows at most), already read."""
        while to_seq is None or self.last_seq < to_seq:
            limit = CATCH_UP_PAGE if to_seq is None else min(CATCH_UP_PAGE, to_seq - self.last_seq)
            if first is not None:
                page, first = first, None
            else:
                page = await self.rows_after(self.last_seq, limit)
            metrics.caught_up(len(page))
            await self.send_stored(page)
            if len(page) < limit:
                return

    async def send_stored(self, messages: Sequence[MessageRow | OutFrame]) -> None:
        """Send stored messages this socket has not had yet, in order, at its reader's pace.

        Rows are encoded here, a slice at a time, rather than on the reader thread: CPU work
        on another thread holds the GIL in 5 ms turns the event loop has to wait out.
        """
        assert self.socket is not None, "sending before attached"
        for start in range(0, len(messages), CATCH_UP_SLICE):
            await self.socket.drained()
            async with catch_up_turns.get():
                fresh = [
                    m if isinstance(m, OutFrame) else out_frame(m)
                    for m in messages[start : start + CATCH_UP_SLICE]
                    if m.seq > self.last_seq
                ]
                if fresh:
                    self.last_seq = fresh[-1].seq
                    if self.plain_only:
                        fresh = [frame for frame in fresh if frame.plain]
                if fresh:
                    self.socket.send(fresh)
                # Hold the turn until the loop has run everything else that is ready.
                await asyncio.sleep(0)

    def close(self) -> None:
        """Stop: cancel a gap fill in progress."""
        if self.resyncing is not None:
            self.resyncing.cancel()
