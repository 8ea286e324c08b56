"""Reads: a room's messages, always oldest first, and where each room stands."""

from __future__ import annotations

from chat.models import Message, Room


def messages_before(*, room_id: int, before: int, limit: int) -> list[Message]:
    """Up to `limit` messages just before sequence number `before`."""
    newest_first = Message.objects.filter(room_id=room_id, seq__lt=before).order_by("-seq")[:limit]
    return list(reversed(newest_first))


def messages_after(*, room_id: int, after: int, limit: int) -> list[Message]:
    """Up to `limit` messages just after sequence number `after`."""
    return list(Message.objects.filter(room_id=room_id, seq__gt=after).order_by("seq")[:limit])


def rooms_last_seq(*, room_ids: list[int]) -> dict[int, int]:
    """The latest sequence number of each room."""
    return dict(Room.objects.filter(pk__in=room_ids).values_list("pk", "last_seq"))


def rooms_positions(*, names: list[str]) -> dict[str, tuple[int, int]]:
    """Each existing room's id and latest sequence number, by name."""
    rows = Room.objects.filter(name__in=names).values_list("name", "pk", "last_seq")
    return {name: (pk, last_seq) for name, pk, last_seq in rows}
