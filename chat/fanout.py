"""Per-process fan-out: each process receives a room's messages once and writes them to its sockets.

Messages still travel between processes through the channel-layer group of their room, but the
group has one member per process — this hub's channel — instead of one per socket. For every
batch that arrives the hub encodes nothing (frames are encoded once, by the writer) and writes
each frame to each local socket of the room, in sequence order, with no per-socket task, queue or
channel-layer round trip.

Ordering and completeness are the hub's job, per room: it remembers the last sequence number it
delivered; a batch that starts beyond the next one is preceded by the missing messages read from
the database, and anything at or below it is a duplicate. A periodic reconcile compares every
local room with the database, so a message whose publish was lost (Redis down, a process killed
between commit and publish) still arrives, a little later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.layers import BaseChannelLayer, get_channel_layer

from chat import protocol, selectors
from chat.db import db_sync_to_async
from chat.models import Message
from chat.rooms import group_name
from chat.runtime import PerLoop
from chat.transport import DirectSocket, OutFrame, joined_payload
from chat.writer import BATCH_EVENT

logger = logging.getLogger(__name__)

# How often every local room is compared with the database (seconds).
RECONCILE_INTERVAL = 2.0
# A room nobody in this process is in stays subscribed this long, so a page reload is cheap.
IDLE_ROOM_LINGER = 10.0
# Messages read from the database per query when filling a gap.
FILL_PAGE = 500


class Member(Protocol):
    """A socket as the hub sees it (ChatConsumer)."""

    direct: DirectSocket | None

    def deliver(self, frames: list[OutFrame], payload: bytes | None) -> Awaitable[None] | None:
        """Take the room's next messages; return what to await, or None if they are written."""


@dataclass(eq=False)
class LocalRoom:
    """A room as seen by this process: its sockets here, and the last message delivered to them."""

    name: str
    room_id: int
    members: set[Member] = field(default_factory=set)
    last_seq: int = 0
    ready: asyncio.Future[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    empty_since: float | None = None


@dataclass
class Hub:
    """The fan-out of one process (one event loop)."""

    layer: BaseChannelLayer = field(default_factory=get_channel_layer)
    rooms: dict[str, LocalRoom] = field(default_factory=dict)
    channel: str | None = None
    # group_add/group_discard of this hub's channel happen one at a time, so a room that is
    # left and rejoined at once can never end unsubscribed while it believes it is subscribed.
    subscriptions: asyncio.Lock = field(default_factory=asyncio.Lock)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    starting: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def join(self, member: Member, *, room_name: str, room_id: int) -> LocalRoom:
        """Add a socket to a room, subscribing this process to the room's group if needed.

        Concurrent joins of a new room share one subscription; when this returns, the hub will
        deliver every message after `room.last_seq` to the member.
        """
        room = self.rooms.get(room_name)
        if room is None:
            room = self.rooms[room_name] = LocalRoom(name=room_name, room_id=room_id)
            room.ready = asyncio.ensure_future(self._subscribe(room))
        elif room.room_id != room_id and room.ready is not None and room.ready.done():
            # The room was deleted and created again under the same name: start it afresh.
            async with room.lock:
                room.room_id = room_id
                room.last_seq = await self._stored_last_seq(room_id)
        room.members.add(member)
        room.empty_since = None
        assert room.ready is not None
        try:
            await asyncio.shield(room.ready)
        except BaseException:
            self.leave(member, room_name=room_name)
            if room.ready.done() and room.ready.exception() is not None:
                # Let the next join try again rather than inherit a failed subscription.
                self.rooms.pop(room_name, None)
            raise
        return room

    def leave(self, member: Member, *, room_name: str) -> None:
        """Remove a socket; an empty room is unsubscribed later, if it stays empty."""
        room = self.rooms.get(room_name)
        if room is not None:
            room.members.discard(member)
            if not room.members:
                room.empty_since = time.monotonic()

    async def _subscribe(self, room: LocalRoom) -> None:
        await self._start()
        assert self.channel is not None
        async with self.subscriptions:
            await self.layer.group_add(group_name(room.name), self.channel)
        # Read the position only once subscribed: anything later arrives through the group.
        room.last_seq = await self._stored_last_seq(room.room_id)

    @staticmethod
    async def _stored_last_seq(room_id: int) -> int:
        positions = await db_sync_to_async(selectors.rooms_last_seq)(room_ids=[room_id])
        return positions.get(room_id, 0)

    async def _start(self) -> None:
        # Rooms joined at the same moment all wait here for one channel: two would leave the
        # rooms subscribed on the first unread forever (seen under load, fixed by this lock).
        async with self.starting:
            if self.channel is None:
                self.channel = await self.layer.new_channel(prefix="chat-hub.")
                self.tasks = [
                    asyncio.create_task(self._receive_loop(), name="chat-hub-receive"),
                    asyncio.create_task(self._reconcile_loop(), name="chat-hub-reconcile"),
                ]

    async def _receive_loop(self) -> None:
        assert self.channel is not None
        while True:
            event = await self.layer.receive(self.channel)
            try:
                if event.get("type") == BATCH_EVENT:
                    await self._on_batch(event)
            except Exception:
                logger.exception("delivering a batch failed; the reconciler will catch up")

    async def _on_batch(self, event: dict[str, Any]) -> None:
        room = self.rooms.get(event["room"])
        if room is None or room.ready is None or not room.ready.done():
            return  # not (yet) subscribed here: a joining socket reads the database instead
        if event["room_id"] != room.room_id:
            return  # a deleted room of the same name
        async with room.lock:
            messages: list[list[Any]] = event["messages"]
            if messages and messages[0][0] > room.last_seq + 1:
                await self._fill(room, to_seq=messages[0][0] - 1)
            fresh = [OutFrame(seq, text) for seq, text in messages if seq > room.last_seq]
            if fresh and fresh[0].seq == room.last_seq + 1:
                await self._deliver(room, fresh)

    async def _deliver(self, room: LocalRoom, frames: list[OutFrame]) -> None:
        """Hand consecutive frames, following room.last_seq, to every member of the room."""
        room.last_seq = frames[-1].seq
        # Joined once for all: a member that is exactly at the room's position writes these.
        payload = joined_payload(frames) if any(m.direct for m in room.members) else None
        for member in tuple(room.members):
            pending = member.deliver(frames, payload)
            if pending is not None:
                await pending

    async def _fill(self, room: LocalRoom, *, to_seq: int) -> None:
        """Deliver stored messages after room.last_seq up to `to_seq`, from the database."""
        while room.last_seq < to_seq:
            limit = min(FILL_PAGE, to_seq - room.last_seq)
            page: list[Message] = await db_sync_to_async(selectors.messages_after)(
                room_id=room.room_id, after=room.last_seq, limit=limit
            )
            frames = [
                OutFrame(message.seq, protocol.encode(protocol.message_frame(message)))
                for message in page
                if message.seq > room.last_seq
            ]
            if frames and frames[0].seq == room.last_seq + 1:
                await self._deliver(room, frames)
            if len(page) < limit:
                return

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL)
            try:
                await self.reconcile()
            except Exception:
                logger.exception("reconciling rooms with the database failed")

    async def reconcile(self) -> None:
        """Deliver whatever the database holds beyond what was delivered; drop idle rooms."""
        now = time.monotonic()
        idle = [
            room
            for room in self.rooms.values()
            if room.empty_since is not None and now - room.empty_since >= IDLE_ROOM_LINGER
        ]
        for room in idle:
            await self._unsubscribe(room)
        live = [r for r in self.rooms.values() if r.ready is not None and r.ready.done()]
        if not live:
            return
        positions = await db_sync_to_async(selectors.rooms_last_seq)(
            room_ids=[room.room_id for room in live]
        )
        for room in live:
            stored = positions.get(room.room_id, 0)
            if stored > room.last_seq:
                async with room.lock:
                    await self._fill(room, to_seq=stored)

    async def _unsubscribe(self, room: LocalRoom) -> None:
        async with self.subscriptions:
            if room.members or self.rooms.get(room.name) is not room:
                return
            del self.rooms[room.name]
            assert self.channel is not None
            await self.layer.group_discard(group_name(room.name), self.channel)

    async def close(self) -> None:
        """Stop receiving and leave every group (for tests and orderly shutdown)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        if self.channel is not None:
            for name in list(self.rooms):
                await self.layer.group_discard(group_name(name), self.channel)
        self.rooms.clear()


hubs: PerLoop[Hub] = PerLoop(Hub)
