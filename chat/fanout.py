"""Per-process fan-out: each process receives a room's messages once, for all its sockets.

Messages still travel between processes through the channel-layer group of their room, but the
group has one member per process — this hub's channel — instead of one per socket. For every
batch that arrives the hub encodes nothing (frames are encoded once, by the writer) and hands
each local socket of the room the frames, in sequence order, with no channel-layer round trip
per socket (each socket's `MessageStream`, chat/stream.py, keeps its own order from there).

Ordering and completeness per room, for the process, are the hub's job: it remembers the last
sequence number it delivered; a batch that starts beyond the next one is preceded by the missing
messages read from the database, and anything at or below it is a duplicate. A periodic
reconcile compares every local room with the database, so a message whose publish was lost
(Redis down, a process killed between commit and publish) still arrives, a little later. The
reconcile reads only the database: it delivers first, and leaves idle rooms' groups in a task of
its own, so a Redis that is down or frozen delays nothing it delivers. Every channel-layer call
has a timeout.

A room is known by name. Until its first message it has no row (and no id) in the database; the
hub learns the id from the first batch or the reconcile. A room whose row disappears (it was
deleted in the admin) closes its sockets, which reconnect to the room afresh.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.layers import BaseChannelLayer, get_channel_layer

from chat import access, metrics, selectors
from chat.db import db_read
from chat.events import Batch, Typing, read_batch, read_typing
from chat.rooms import group_name
from chat.runtime import PerLoop
from chat.stream import out_frame
from chat.transport import DirectSocket, OutFrame, joined_payload
from chat.writer import writers

logger = logging.getLogger(__name__)

# How often every local room is compared with the database (seconds).
RECONCILE_INTERVAL = 2.0
# A room nobody in this process is in stays subscribed this long, so a page reload is cheap.
IDLE_ROOM_LINGER = 10.0
# Messages read from the database per query when filling a gap.
FILL_PAGE = 500
# Channel-layer calls (subscribe, unsubscribe) give up after this long: Redis may be frozen.
LAYER_TIMEOUT = 5.0


async def _layer_call(call: Any) -> Any:
    return await asyncio.wait_for(call, LAYER_TIMEOUT)


class Member(Protocol):
    """A socket as the hub sees it (ChatConsumer)."""

    direct: DirectSocket | None

    def deliver(self, frames: list[OutFrame], payload: bytes | None, changes: bool) -> None:
        """Take the room's next messages (`payload`: their bytes joined, under daphne;
        `changes`: some are edits or deletes, which not every client is sent)."""

    @property
    def user_id(self) -> int | None:
        """The signed-in user behind the socket, if any."""

    def typing(self, name: str, *, sender: str) -> None:
        """Someone in the room is typing (`sender`: the typist's socket, not to be told)."""

    async def recheck_access(self) -> None:
        """Access to the room changed for someone: check it again, close if refused."""

    def room_gone(self) -> None:
        """The room was deleted: close the socket."""


@dataclass(eq=False)
class LocalRoom:
    """A room as seen by this process: its sockets here, and the last message delivered to them."""

    name: str
    # None while the room has no message (and so no row in the database).
    room_id: int | None
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
    unsubscribing: asyncio.Future[None] | None = None
    # Access checks in progress (strong references to their tasks).
    checks: set[asyncio.Future[None]] = field(default_factory=set)
    # Rooms whose group this hub failed to leave (Redis was out): left again at a reconcile.
    leaving: set[str] = field(default_factory=set)

    async def join(self, member: Member, *, room_name: str) -> LocalRoom:
        """Add a socket to a room, subscribing this process to the room's group if needed.

        Concurrent joins of a new room share one subscription; when this returns, the hub will
        deliver every message after `room.last_seq` to the member.
        """
        room = self.rooms.get(room_name)
        if room is None:
            room = self.rooms[room_name] = LocalRoom(name=room_name, room_id=None)
            room.ready = asyncio.ensure_future(self._subscribe(room))
        room.members.add(member)
        room.empty_since = None
        assert room.ready is not None
        try:
            await asyncio.shield(room.ready)
        except BaseException:
            self.leave(member, room_name=room_name)
            failed = room.ready.done() and room.ready.exception() is not None
            if failed and self.rooms.get(room_name) is room:
                # Let the next join try again rather than inherit a failed subscription.
                del self.rooms[room_name]
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
            await _layer_call(self.layer.group_add(group_name(room.name), self.channel))
        # Read the position only once subscribed: anything later arrives through the group.
        positions = await db_read(selectors.rooms_positions)(names=[room.name])
        room.room_id, room.last_seq = positions.get(room.name, (None, 0))

    async def _start(self) -> None:
        # Rooms joined at the same moment all wait here for one channel: two would leave the
        # rooms subscribed on the first unread forever (seen under load, fixed by this lock).
        async with self.starting:
            if self.channel is None:
                self.channel = await _layer_call(self.layer.new_channel(prefix="chat-hub."))
                # Bans and removals from private rooms, for every process (chat/access.py).
                await _layer_call(self.layer.group_add(access.CONTROL_GROUP, self.channel))
                self.tasks = [
                    asyncio.create_task(self._receive_loop(), name="chat-hub-receive"),
                    asyncio.create_task(self._reconcile_loop(), name="chat-hub-reconcile"),
                ]

    async def _receive_loop(self) -> None:
        assert self.channel is not None
        while True:
            event = await self.layer.receive(self.channel)
            try:
                batch = read_batch(event)
                if batch is not None:
                    await self._on_batch(batch)
                    continue
                typing = read_typing(event)
                if typing is not None:
                    self._on_typing(typing)
                    continue
                revoke = access.read_revoke(event)
                if revoke is not None:
                    self._on_revoke(revoke)
            except Exception:
                logger.exception("delivering a batch failed; the reconciler will catch up")

    async def _on_batch(self, batch: Batch) -> None:
        room = self.rooms.get(batch.room)
        if room is None or room.ready is None or not room.ready.done():
            return  # not (yet) subscribed here: a joining socket reads the database instead
        if room.room_id is None and room.last_seq == 0:
            room.room_id = batch.room_id  # the room's first messages: now it has an id
        if batch.room_id != room.room_id:
            return  # a deleted room of the same name: the reconcile sorts it out
        async with room.lock:
            messages = batch.messages
            if messages and messages[0][0] > room.last_seq + 1:
                metrics.gap_filled()
                await self._fill(room, to_seq=messages[0][0] - 1)
            fresh = [
                OutFrame(seq, text, plain=plain)
                for seq, text, plain in messages
                if seq > room.last_seq
            ]
            if fresh and fresh[0].seq == room.last_seq + 1:
                await self._deliver(room, fresh)

    def _on_revoke(self, revoke: access.Revoke) -> None:
        """Access was taken from someone: their sockets check it again (off this loop)."""
        rooms = [self.rooms.get(revoke.room)] if revoke.room else list(self.rooms.values())
        for room in rooms:
            for member in tuple(room.members) if room is not None else ():
                if revoke.user_id is None or member.user_id == revoke.user_id:
                    check = asyncio.ensure_future(member.recheck_access())
                    self.checks.add(check)
                    check.add_done_callback(self.checks.discard)

    def _on_typing(self, typing: Typing) -> None:
        room = self.rooms.get(typing.room)
        for member in tuple(room.members) if room is not None else ():
            try:
                member.typing(typing.name, sender=typing.sender)
            except Exception:
                logger.exception("telling a socket in room %s of typing failed", typing.room)

    async def _deliver(self, room: LocalRoom, frames: list[OutFrame]) -> None:
        """Hand consecutive frames, following room.last_seq, to every member of the room."""
        room.last_seq = frames[-1].seq
        # Joined once for all: a member that is exactly at the room's position writes these.
        payload = joined_payload(frames) if any(m.direct for m in room.members) else None
        # Looked at once per batch, not once per socket.
        changes = not all(frame.plain for frame in frames)
        for member in tuple(room.members):
            try:
                member.deliver(frames, payload, changes)
            except Exception:
                # That socket's problem alone; the rest of the room still gets the messages.
                logger.exception("delivering to a socket in room %s failed", room.name)
        metrics.delivered(room.name, frames, len(room.members))

    async def _fill(self, room: LocalRoom, *, to_seq: int) -> None:
        """Deliver stored messages after room.last_seq up to `to_seq`, from the database."""
        # Not before this process's posters have their acks (chat/writer.py `settled`).
        await writers.get().settled()
        while room.last_seq < to_seq and room.room_id is not None:
            limit = min(FILL_PAGE, to_seq - room.last_seq)
            page = await db_read(selectors.rows_after)(
                room_id=room.room_id, after=room.last_seq, limit=limit
            )
            frames = [out_frame(row) for row in page if row.seq > room.last_seq]
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
        live = [r for r in self.rooms.values() if r.ready is not None and r.ready.done()]
        if live:
            # What each room was known as when the database was read: a room whose first
            # message gave it an id meanwhile was not deleted, it is newer than the read.
            known = {room.name: room.room_id for room in live}
            positions = await db_read(selectors.rooms_positions)(names=list(known))
            for room in live:
                async with room.lock:
                    if room.room_id == known[room.name]:
                        await self._reconcile_room(room, positions.get(room.name))
        now = time.monotonic()
        idle = [
            room
            for room in self.rooms.values()
            if room.empty_since is not None and now - room.empty_since >= IDLE_ROOM_LINGER
        ]
        if (idle or self.leaving) and (self.unsubscribing is None or self.unsubscribing.done()):
            # Apart from delivery: leaving groups waits on Redis, which may be down.
            self.unsubscribing = asyncio.ensure_future(self._unsubscribe_all(idle))

    async def _reconcile_room(self, room: LocalRoom, stored: tuple[int, int] | None) -> None:
        room_id, last_seq = stored if stored is not None else (None, 0)
        if room.room_id is not None and room_id != room.room_id:
            # The room was deleted (and maybe created again): its sockets hold positions in a
            # history that is gone. They reconnect and start afresh.
            logger.info(
                "room %s was deleted; closing its %d socket(s)", room.name, len(room.members)
            )
            for member in tuple(room.members):
                try:
                    member.room_gone()
                except Exception:
                    logger.exception("closing a socket of deleted room %s failed", room.name)
            room.room_id, room.last_seq = room_id, last_seq
            return
        if room.room_id is None:
            room.room_id = room_id  # created by a post whose publish never arrived here
        if last_seq > room.last_seq:
            metrics.reconciled()
            await self._fill(room, to_seq=last_seq)

    async def _unsubscribe_all(self, rooms: list[LocalRoom]) -> None:
        for name in list(self.leaving):
            await self._leave_again(name)
        for room in rooms:
            try:
                await self._unsubscribe(room)
            except Exception as error:
                logger.warning("leaving the group of room %s failed: %r", room.name, error)

    async def _unsubscribe(self, room: LocalRoom) -> None:
        async with self.subscriptions:
            if room.members or self.rooms.get(room.name) is not room:
                return
            del self.rooms[room.name]
            assert self.channel is not None
            try:
                await _layer_call(self.layer.group_discard(group_name(room.name), self.channel))
            except Exception:
                # channels-redis forgets the group before its unsubscribe fails, while redis-py
                # keeps the subscription and renews it when Redis is back: leave it again later.
                self.leaving.add(room.name)
                raise

    async def _leave_again(self, name: str) -> None:
        """Retry leaving a room's group whose unsubscribe failed (unless it was rejoined)."""
        async with self.subscriptions:
            if name not in self.rooms:
                assert self.channel is not None
                group = group_name(name)
                try:
                    # Known to the layer again, so that discarding it unsubscribes for real.
                    await _layer_call(self.layer.group_add(group, self.channel))
                    await _layer_call(self.layer.group_discard(group, self.channel))
                except Exception as error:
                    logger.warning("leaving the group of room %s failed again: %r", name, error)
                    return
            self.leaving.discard(name)

    async def close(self) -> None:
        """Stop receiving and leave every group (for tests and orderly shutdown)."""
        tasks = [*self.tasks, *([self.unsubscribing] if self.unsubscribing else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.tasks = []
        if self.channel is not None:
            for name in list(self.rooms):
                try:
                    await _layer_call(self.layer.group_discard(group_name(name), self.channel))
                except Exception as error:
                    logger.warning("leaving the group of room %s failed: %r", name, error)
        self.rooms.clear()


hubs: PerLoop[Hub] = PerLoop(Hub)
