"""Writes: rooms and messages. Synchronous; the consumer calls them off the event loop."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from django.db import transaction

from chat.models import Message, Room

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# The session key under which a visitor's guest name is kept between pages and sockets.
GUEST_NAME_SESSION_KEY = "chat_guest_name"


def guest_name() -> str:
    """A fresh display name for a visitor who is not signed in."""
    return f"guest-{secrets.token_hex(3)}"


def room_get_or_create(*, name: str) -> Room:
    """The room called `name`, created on first use."""
    room, _ = Room.objects.get_or_create(name=name)
    return room


def message_create(
    *,
    room_id: int,
    author: User | None,
    author_name: str,
    body: str,
    client_id: str | None,
) -> tuple[Message, bool]:
    """Store a post with the room's next sequence number; return it and whether it is new.

    A post whose `client_id` the room has already stored is a resend: the stored message is
    returned and nothing is written, so retrying is always safe.
    """
    with transaction.atomic():
        # The row lock (PostgreSQL) or the immediate write lock (SQLite) is held until commit,
        # so sequence numbers are handed out one at a time across every process.
        room = Room.objects.select_for_update().only("id", "last_seq").get(pk=room_id)
        if client_id is not None:
            existing = Message.objects.filter(room_id=room_id, client_id=client_id).first()
            if existing is not None:
                return existing, False
        room.last_seq += 1
        room.save(update_fields=["last_seq"])
        message = Message.objects.create(
            room_id=room_id,
            seq=room.last_seq,
            author=author if author is not None and author.is_authenticated else None,
            author_name=author_name,
            body=body,
            client_id=client_id,
        )
    return message, True
