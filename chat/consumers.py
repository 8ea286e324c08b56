"""The chat WebSocket consumer: parse a frame, call a service, answer the sender.

Every socket is sent its room's stored messages in sequence order, each exactly once: on
connect the history (or everything after `?after=N`), then live messages from the channel
layer. `last_seq` is the last sequence number this socket was sent; live messages at or below
it are duplicates and dropped, and a live message beyond `last_seq + 1` is preceded by the
missing ones, read from the database (which is the source of truth; the layer is the fast path).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from chat import protocol, selectors, services
from chat.models import Message
from chat.protocol import ErrorCode, ProtocolError
from chat.rooms import group_name

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# Catch-up after a reconnect is read in pages of this many messages.
CATCH_UP_PAGE = 500


class ChatConsumer(AsyncWebsocketConsumer):
    """One browser tab in one room."""

    room_name: str
    group: str
    room_id: int
    author: User | None
    author_name: str
    joined: bool = False
    last_seq: int = 0

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route an event to its handler without Channels' per-event thread hop.

        `AsyncConsumer.dispatch` runs `aclose_old_connections()` (a trip to the sync thread)
        before every event, including each group message to each socket. Handlers here touch
        the database only through `database_sync_to_async`, which closes stale connections
        itself, so the hop buys nothing and halves throughput.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        """Join the room's group, accept, then send the history or the missed messages."""
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.group = group_name(self.room_name)
        resume_error = None
        try:
            after = protocol.parse_resume(self.scope.get("query_string", b""))
        except ProtocolError as error:
            after, resume_error = None, error
        room_last_seq = await self.enter_room()
        # Join before reading the database: a message stored meanwhile is then either in the
        # read or queued on our channel (or both, and dropped once as a duplicate).
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.joined = True
        await self.accept()
        if resume_error is not None:
            await self.send_error(resume_error)
        if after is None or after > room_last_seq:
            # A new client, or one whose position this room never reached: start afresh.
            latest = await database_sync_to_async(selectors.messages_latest)(
                room_id=self.room_id, limit=protocol.HISTORY_ON_JOIN
            )
            await self.send_stored(latest)
        else:
            self.last_seq = after
            await self.catch_up(to_seq=None)

    async def disconnect(self, code: int) -> None:
        """Leave the room's group."""
        if self.joined:
            await self.channel_layer.group_discard(self.group, self.channel_name)

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
        """Store the message, acknowledge it, then broadcast it (encoded once for everyone)."""
        message, created = await database_sync_to_async(services.message_create)(
            room_id=self.room_id,
            author=self.author,
            author_name=self.author_name,
            body=frame.message,
            client_id=frame.client_id,
        )
        if frame.client_id is not None:
            ack: protocol.AckFrame = {
                "type": "ack",
                "client_id": frame.client_id,
                "seq": message.seq,
            }
            await self.send(text_data=protocol.encode(ack))
        if created:
            await self.channel_layer.group_send(
                self.group,
                {
                    "type": "chat.message",
                    "seq": message.seq,
                    "frame": protocol.encode(protocol.message_frame(message)),
                },
            )

    async def history(self, request: protocol.HistoryRequest) -> None:
        """Answer a history request with a page of stored messages."""
        if request.before is not None:
            page = await database_sync_to_async(selectors.messages_before)(
                room_id=self.room_id, before=request.before, limit=request.limit
            )
        else:
            assert request.after is not None
            page = await database_sync_to_async(selectors.messages_after)(
                room_id=self.room_id, after=request.after, limit=request.limit
            )
        reply: protocol.HistoryFrame = {
            "type": "history",
            "messages": [protocol.message_frame(message) for message in page],
        }
        await self.send(text_data=protocol.encode(reply))

    async def chat_message(self, event: dict[str, Any]) -> None:
        """Forward a live message in sequence order, filling any gap from the database."""
        seq: int = event["seq"]
        if seq <= self.last_seq:
            return
        if seq > self.last_seq + 1:
            await self.catch_up(to_seq=seq - 1)
        if seq == self.last_seq + 1:
            await self.send(text_data=event["frame"])
            self.last_seq = seq

    async def catch_up(self, *, to_seq: int | None) -> None:
        """Send the stored messages after `last_seq`, up to `to_seq` (or the latest)."""
        while to_seq is None or self.last_seq < to_seq:
            limit = CATCH_UP_PAGE if to_seq is None else min(CATCH_UP_PAGE, to_seq - self.last_seq)
            page = await database_sync_to_async(selectors.messages_after)(
                room_id=self.room_id, after=self.last_seq, limit=limit
            )
            await self.send_stored(page)
            if len(page) < limit:
                return

    async def send_stored(self, messages: list[Message]) -> None:
        """Send stored messages this socket has not had yet, in order."""
        for message in messages:
            if message.seq > self.last_seq:
                await self.send(text_data=protocol.encode(protocol.message_frame(message)))
                self.last_seq = message.seq

    @database_sync_to_async
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
