"""The one event that travels between processes: a batch of a room's newly stored messages.

The writer (chat/writer.py) builds it after a commit and publishes it to the room's group; every
process's hub (chat/fanout.py) reads it. The channel layer serialises it (msgpack under Redis),
so it holds only plain types: each message is `[seq, frame text]`, the frame encoded once by the
writer for every socket of every process, or `[seq, frame text, 0]` for an edit or a delete,
which is sent only to the clients that speak the protocol (not to the tutorial's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

BATCH_EVENT: Final = "chat.batch"
TYPING_EVENT: Final = "chat.typing"


class BatchEvent(TypedDict):
    """`chat.batch`: stored messages of one room, consecutive and in sequence order."""

    type: Literal["chat.batch"]
    room: str
    room_id: int
    messages: list[list[int | str]]


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch event as the hub reads it: (seq, frame text, plain) of each event."""

    room: str
    room_id: int
    messages: list[tuple[int, str, bool]]


def batch_event(
    room: str, room_id: int, messages: list[tuple[int, str]] | list[tuple[int, str, bool]]
) -> BatchEvent:
    """The event that carries `messages` ((seq, frame text[, plain]), in order) of a room."""
    items: list[list[int | str]] = []
    for message in messages:
        seq, text = message[0], message[1]
        plain = message[2] if len(message) == 3 else True
        items.append([seq, text] if plain else [seq, text, 0])
    return {"type": BATCH_EVENT, "room": room, "room_id": room_id, "messages": items}


class TypingEvent(TypedDict):
    """`chat.typing`: a person in a room is typing; `sender` is the socket not to tell."""

    type: Literal["chat.typing"]
    room: str
    name: str
    sender: str


@dataclass(frozen=True, slots=True)
class Typing:
    """A typing event as the hub reads it."""

    room: str
    name: str
    sender: str


def typing_event(room: str, name: str, sender: str) -> TypingEvent:
    """The event that tells a room's other sockets that `name` is typing."""
    return {"type": TYPING_EVENT, "room": room, "name": name, "sender": sender}


def read_typing(event: dict[str, Any]) -> Typing | None:
    """The typing notice an event carries, or None if it is not one."""
    if event.get("type") != TYPING_EVENT:
        return None
    room, name, sender = event.get("room"), event.get("name"), event.get("sender")
    if not (isinstance(room, str) and isinstance(name, str) and isinstance(sender, str)):
        return None
    return Typing(room, name, sender)


def read_batch(event: dict[str, Any]) -> Batch | None:
    """The batch an event carries, or None if it is not one (or not well formed)."""
    if event.get("type") != BATCH_EVENT:
        return None
    room, room_id, messages = event.get("room"), event.get("room_id"), event.get("messages")
    if not (isinstance(room, str) and isinstance(room_id, int) and isinstance(messages, list)):
        return None
    triples: list[tuple[int, str, bool]] = []
    for item in messages:
        if not (2 <= len(item) <= 3 and isinstance(item[0], int) and isinstance(item[1], str)):
            return None
        triples.append((item[0], item[1], len(item) == 2))
    return Batch(room, room_id, triples)
