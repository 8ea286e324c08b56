"""The chat WebSocket consumer: parse a frame, hand it on, answer errors to the sender."""

from __future__ import annotations

import logging
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer

from chat import protocol
from chat.protocol import ErrorCode, ProtocolError
from chat.rooms import group_name

logger = logging.getLogger(__name__)


class ChatConsumer(AsyncWebsocketConsumer):
    """One browser tab in one room."""

    room_name: str
    group: str
    joined: bool = False

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route an event to its handler without Channels' per-event thread hop.

        `AsyncConsumer.dispatch` runs `aclose_old_connections()` (a trip to the sync thread)
        before every event, including each group message to each socket. Handlers here that
        touch the database do so through `database_sync_to_async`, which closes stale
        connections itself, so the hop buys nothing and halves throughput.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        """Join the room's group, then accept."""
        self.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.group = group_name(self.room_name)
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.joined = True
        await self.accept()

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
        await self.post(frame)

    async def post(self, frame: protocol.PostMessage) -> None:
        """Broadcast a message to the room, encoded once for every recipient."""
        out: protocol.MessageFrame = {"type": "message", "message": frame.message}
        await self.channel_layer.group_send(
            self.group, {"type": "chat.message", "frame": protocol.encode(out)}
        )

    async def chat_message(self, event: dict[str, Any]) -> None:
        """Forward a room message, already encoded by its sender's consumer."""
        await self.send(text_data=event["frame"])

    async def send_error(self, error: ProtocolError) -> None:
        """Tell this socket (and no one else) why its frame was refused."""
        await self.send(text_data=protocol.encode(protocol.error_frame(error)))


class RefuseConsumer(AsyncWebsocketConsumer):
    """Refuses every handshake: the path is not a valid room."""

    channel_layer_alias = None  # nothing to receive, so no channel to create

    async def connect(self) -> None:
        """Close before accepting, which daphne answers with HTTP 403."""
        await self.close()
