"""The chat WebSocket consumer: parse a frame, call a service, answer the sender.

Every socket is sent its room's stored messages in sequence order, each exactly once: first
the history (or everything after `?after=N`) read from the database, then the live messages the
process's hub (chat/fanout.py) hands it. While the history is being read the hub's messages are
held back in `backlog`; afterwards those the history already covered are skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from chat import protocol, selectors, services
from chat.db import db_sync_to_async
from chat.fanout import hubs
from chat.models import Message
from chat.protocol import ErrorCode, ProtocolError
from chat.transport import SCOPE_KEY, DirectSocket, OutFrame, Receive, Scope, Send, direct_socket
from chat.writer import writers

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# Catch-up after a reconnect is read in pages of this many messages.
CATCH_UP_PAGE = 500
# Posts of one socket waiting to be stored, at most; beyond, its frames wait to be read.
MAX_IN_FLIGHT = 100
# Live messages held for a socket still reading its history, at most. Past this they are
# dropped and read from the database again, so a slow catch-up in a busy room stays bounded.
MAX_BACKLOG = 1000


class ChatConsumer(AsyncWebsocketConsumer):
    """One browser tab in one room."""

    # No channel per socket: the hub receives each room's messages once per process.
    channel_layer_alias = None

    room_name: str
    room_id: int
    author: User | None
    author_name: str
    joined: bool = False
    # The last sequence number this socket was sent.
    last_seq: int = 0
    # Until the history is sent, the hub's deliveries wait here.
    live: bool = False
    backlog: list[OutFrame]
    backlog_overflowed: bool = False
    # The daphne connection itself, when there is one (see chat/transport.py).
    direct: DirectSocket | None = None
    resyncing: asyncio.Future[None] | None = None
    # Posts handed to the writer and not yet stored; past MAX_IN_FLIGHT the socket waits.
    in_flight: int = 0
    writable: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One socket's life: dispatch each event the server sends, in turn.

        Channels' `AsyncConsumer.__call__` waits on the server and on a channel-layer channel
        at once (`await_many_dispatch`: a task, and an `asyncio.wait`, per event). This consumer
        has no channel (the hub receives for it), so it reads the server's events directly,
        which also keeps an idle socket to one coroutine.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route an event to its handler without Channels' per-event thread hop.

        `AsyncConsumer.dispatch` runs `aclose_old_connections()` (a trip to the sync thread)
        before every event. Handlers here touch the database only through
        `chat.db.db_sync_to_async`, which manages the connection itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        """Join the room, accept, send the history or the missed messages, then go live."""
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.server_send = self.scope.get(SCOPE_KEY, self.base_send)
        query = self.scope.get("query_string", b"")
        resume_error = None
        try:
            after = protocol.parse_resume(query)
        except ProtocolError as error:
            after, resume_error = None, error
        room_last_seq = await self.enter_room()
        self.backlog = []
        # Join before reading the database: a message stored meanwhile is then in the read or
        # in the backlog (or both, and sent once). From `joined_at` on, the hub hands this
        # socket every message, so the history is what came up to there.
        local = await hubs.get().join(self, room_name=self.room_name, room_id=self.room_id)
        joined_at = local.last_seq
        self.joined = True
        await self.accept()
        self.direct = direct_socket(self.server_send)
        if resume_error is not None:
            await self.send_error(resume_error)
        if after is None or after > room_last_seq:
            # A new client, or one whose position this room never reached: the latest page
            # up to where the live stream starts. Not the latest page now: posts that arrived
            # since the join (already in the backlog) would push older ones out of it, unseen.
            history = await db_sync_to_async(selectors.messages_before)(
                room_id=self.room_id, before=joined_at + 1, limit=protocol.HISTORY_ON_JOIN
            )
            await self.send_stored(history)
        else:
            self.last_seq = after
            await self.catch_up()
        await self.drain_backlog()
        if protocol.wants_synced(query):
            synced: protocol.SyncedFrame = {"type": "synced", "last_seq": self.last_seq}
            await self.send(text_data=protocol.encode(synced))
            await self.drain_backlog()
        # No await since drain_backlog's last check: nothing can slip into the backlog unseen.
        self.live = True

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
            for frame in backlog:
                await self.write(frame)

    async def resync(self) -> None:
        """Fill a gap from the database, then take live deliveries again."""
        await self.drain_backlog()
        self.live = True

    async def disconnect(self, code: int) -> None:
        """Leave the room."""
        if self.joined:
            hubs.get().leave(self, room_name=self.room_name)

    def deliver(self, frames: list[OutFrame], payload: bytes | None) -> Awaitable[None] | None:
        """From the hub: the room's next messages (and their bytes joined, under daphne).

        Returns what to await, if anything: under daphne the frames are written at once.
        """
        if not self.live:
            if len(self.backlog) + len(frames) <= MAX_BACKLOG:
                self.backlog.extend(frames)
            else:
                self.backlog.clear()
                self.backlog_overflowed = True
            return None
        if frames[0].seq != self.last_seq + 1:
            # Not exactly the next ones (this socket's own catch-up ran ahead): keep the new.
            frames = [frame for frame in frames if frame.seq > self.last_seq]
            payload = None
            if not frames:
                return None
            if frames[0].seq > self.last_seq + 1:
                # The hub hands out consecutive messages, so this should not happen; if it
                # does, the database has what is missing: go back to catching up.
                logger.warning("socket in room %s missed messages; catching up", self.room_name)
                self.live = False
                self.backlog.extend(frames)
                # In a task of its own: the hub must not wait on one socket's database read.
                self.resyncing = asyncio.ensure_future(self.resync())
                return None
        self.last_seq = frames[-1].seq
        if self.direct is not None:
            self.direct.send(frames, payload)
            return None
        return self.send_texts(frames)

    async def send_texts(self, frames: list[OutFrame]) -> None:
        """Plain ASGI sends, under servers other than daphne (and in tests)."""
        for frame in frames:
            await self.server_send({"type": "websocket.send", "text": frame.text})

    async def write(self, frame: OutFrame) -> None:
        """Write a frame at the pace this socket reads (its own catch-up, not the room's)."""
        if frame.seq <= self.last_seq:
            return
        if self.direct is not None:
            await self.direct.drained()
            self.last_seq = frame.seq
            self.direct.send([frame])
        else:
            self.last_seq = frame.seq
            await self.server_send({"type": "websocket.send", "text": frame.text})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one frame from the browser."""
        if text_data is None:
            if bytes_data is not None and len(bytes_data) > protocol.MAX_FRAME_BYTES:
                await self.close(code=protocol.CLOSE_TOO_BIG)
                return
            await self.send_error(
                ProtocolError(ErrorCode.BINARY_NOT_SUPPORTED, "Frames must be JSON text.")
            )
            return
        if protocol.frame_too_big(text_data):
            await self.close(code=protocol.CLOSE_TOO_BIG)
            return
        try:
            frame = protocol.parse_client_frame(text_data)
        except ProtocolError as error:
            await self.send_error(error)
            return
        if isinstance(frame, protocol.PostMessage):
            await self.post(frame)
        else:
            await self.history(frame)

    async def post(self, frame: protocol.PostMessage) -> None:
        """Queue the message for storing; the writer acknowledges it, then broadcasts it."""
        if self.in_flight >= MAX_IN_FLIGHT:
            # Stop reading this socket until the writer catches up with it.
            self.writable = asyncio.Event()
            await self.writable.wait()
        self.in_flight += 1
        post = services.NewPost(
            room_id=self.room_id,
            author=self.author,
            author_name=self.author_name,
            body=frame.message,
            client_id=frame.client_id,
        )
        writers.get().submit(self.room_name, post, self)

    async def stored(self, message: Message, *, client_id: str | None) -> None:
        """From the writer: a post of this socket is stored."""
        self.post_settled()
        if client_id is not None:
            ack: protocol.AckFrame = {"type": "ack", "client_id": client_id, "seq": message.seq}
            await self.send(text_data=protocol.encode(ack))

    async def store_failed(self, *, client_id: str | None) -> None:
        """From the writer: a post of this socket could not be stored."""
        self.post_settled()
        error = ProtocolError(ErrorCode.NOT_STORED, "The message was not stored; send it again.")
        frame = protocol.error_frame(error)
        if client_id is not None:
            frame["client_id"] = client_id
        await self.send(text_data=protocol.encode(frame))

    def post_settled(self) -> None:
        self.in_flight -= 1
        if self.writable is not None:
            self.writable.set()
            self.writable = None

    async def history(self, request: protocol.HistoryRequest) -> None:
        """Answer a history request with a page of stored messages."""
        if request.before is not None:
            page = await db_sync_to_async(selectors.messages_before)(
                room_id=self.room_id, before=request.before, limit=request.limit
            )
        else:
            assert request.after is not None
            page = await db_sync_to_async(selectors.messages_after)(
                room_id=self.room_id, after=request.after, limit=request.limit
            )
        reply: protocol.HistoryFrame = {
            "type": "history",
            "messages": [protocol.message_frame(message) for message in page],
        }
        await self.send(text_data=protocol.encode(reply))

    async def catch_up(self, *, to_seq: int | None = None) -> None:
        """Send the stored messages after `last_seq`, up to `to_seq` (or the latest)."""
        while to_seq is None or self.last_seq < to_seq:
            limit = CATCH_UP_PAGE if to_seq is None else min(CATCH_UP_PAGE, to_seq - self.last_seq)
            page = await db_sync_to_async(selectors.messages_after)(
                room_id=self.room_id, after=self.last_seq, limit=limit
            )
            await self.send_stored(page)
            if len(page) < limit:
                return

    async def send_stored(self, messages: list[Message]) -> None:
        """Send stored messages this socket has not had yet, in order."""
        for message in messages:
            await self.write(
                OutFrame(message.seq, protocol.encode(protocol.message_frame(message)))
            )

    @db_sync_to_async
    def enter_room(self) -> int:
        """Find or create the room and name the author; return the room's last sequence."""
        room = services.room_get_or_create(name=self.room_name)
        self.room_id = room.pk
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self.author, self.author_name = user, user.get_username()
        else:
            session = self.scope.get("session")
            remembered = session.get(services.GUEST_NAME_SESSION_KEY) if session else None
            self.author, self.author_name = None, remembered or services.guest_name()
        return room.last_seq

    async def send_error(self, error: ProtocolError) -> None:
        """Tell this socket (and no one else) why its frame was refused."""
        await self.send(text_data=protocol.encode(protocol.error_frame(error)))


class RefuseConsumer(AsyncWebsocketConsumer):
    """Refuses every handshake: the path is not a valid room."""

    channel_layer_alias = None  # nothing to receive, so no channel to create

    async def connect(self) -> None:
        """Close before accepting, which daphne answers with HTTP 403."""
        await self.close()
