"""Retention and export: old messages pruned in small batches, rooms written out and read back.

Pruning deletes a prefix of a room's history: every event up to the newest one older than the
cutoff. What remains is always "seq N and after", so the first stored seq says where the pruned
range ends, with no extra column: a client resuming after a position below it is told
(`{"type": "pruned", "before": N}`, docs/protocol.md) before it is sent what remains, instead
of being handed a silent gap.

Each batch is its own short transaction, with a pause between batches, so the group commit
(chat/writer.py) waits for one batch at most, never for the whole prune.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from chat import metrics, protocol, sql
from chat.db import db_read
from chat.models import Message, Room
from chat.selectors import MessageRow
from chat.transport import Socket

# Rows deleted per transaction, and the pause after each, so writers get the lock in between.
PRUNE_BATCH = 1000
PRUNE_PAUSE = 0.05
# Rows written per transaction by an import.
IMPORT_BATCH = 1000

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class PrunedFrame(TypedDict):
    """Sent to a client resuming inside a pruned range: events before `before` are gone."""

    type: Literal["pruned"]
    before: int


def parse_age(text: str) -> timedelta:
    """ "90d", "12h", "30m", "45s" or "2w" as a timedelta; ValueError otherwise."""
    match = _AGE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an age such as 90d, 12h, 30m or 2w")
    return timedelta(**{_UNITS[match[2]]: int(match[1])})


@dataclass(frozen=True)
class Pruned:
    """What a prune did to one room: its events up to `through` are gone."""

    room: str
    deleted: int
    through: int


def prune(
    *,
    older_than: timedelta,
    room: str | None = None,
    batch: int = PRUNE_BATCH,
    pause: float = PRUNE_PAUSE,
) -> list[Pruned]:
    """Delete every room's (or one room's) events older than `older_than`, in batches."""
    cutoff = timezone.now() - older_than
    rooms = Room.objects.order_by("pk")
    if room is not None:
        rooms = rooms.filter(name=room)
    done = []
    for room_id, name in rooms.values_list("pk", "name"):
        through = Message.objects.filter(room_id=room_id, created_at__lt=cutoff).aggregate(
            through=Max("seq")
        )["through"]
        if through is not None:
            deleted = _delete_through(room_id, through, batch=batch, pause=pause)
            done.append(Pruned(room=name, deleted=deleted, through=through))
    return done


def _delete_through(room_id: int, through: int, *, batch: int, pause: float) -> int:
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                Message.objects.filter(room_id=room_id, seq__lte=through)
                .order_by("seq")
                .values_list("pk", flat=True)[:batch]
            )
            if ids:
                Message.objects.filter(pk__in=ids).delete()
        deleted += len(ids)
        if len(ids) < batch:
            return deleted
        time.sleep(pause)


def first_kept(room_id: int) -> int:
    """The first seq a room still stores (everything before it was pruned); last_seq + 1 if
    nothing is left."""
    # Plain SQL: every resume asks (chat/sql.py says why).
    rows = sql.fetch(
        f"SELECT seq FROM {sql.table(Message)} WHERE room_id = %s ORDER BY seq LIMIT 1",
        [room_id],
    )
    if rows:
        return int(rows[0][0])
    rows = sql.fetch(f"SELECT last_seq FROM {sql.table(Room)} WHERE id = %s", [room_id])
    return (int(rows[0][0]) if rows else 0) + 1


async def tell_if_pruned(
    socket: Socket, *, room_id: int | None, after: int, page: Sequence[MessageRow]
) -> None:
    """Before a resume after `after`: tell the client if what follows it was pruned.

    `page` is the resume's first page of rows after `after`. Sequence numbers have no gaps and
    pruning deletes only the oldest, so a page that does not start at `after + 1` starts where
    the kept history does; only an empty page needs asking the database.
    """
    if room_id is None:
        return
    before = page[0].seq if page else await db_read(first_kept)(room_id)
    if after + 1 < before:
        metrics.resumed_into_pruned()
        frame: PrunedFrame = {"type": "pruned", "before": before}
        # PrunedFrame lives here until chat/protocol.py's union of server frames takes it in.
        socket.send_text(json.dumps(frame, separators=(",", ":")))


# --- Export and import ------------------------------------------------------------------------


def export_room(name: str) -> Iterator[str]:
    """The room's posts as they are now, oldest first, one JSON object per line.

    Each line: seq, author, time (ISO 8601, UTC), text, guest (no account), and edited (when)
    if the post was edited. Deleted posts, and the edit and delete events themselves (already
    applied to their posts), are left out.
    """
    room = Room.objects.get(name=name)
    posts = (
        Message.objects.filter(room=room, kind=Message.Kind.MESSAGE, deleted=False)
        .order_by("seq")
        .values_list("seq", "author_name", "created_at", "body", "author_id", "edited_at")
    )
    for seq, author, created_at, body, author_id, edited_at in posts.iterator(chunk_size=2000):
        line: dict[str, object] = {
            "seq": seq,
            "author": author,
            "time": protocol.format_time(created_at),
            "text": body,
            "guest": author_id is None,
        }
        if edited_at is not None:
            line["edited"] = protocol.format_time(edited_at)
        yield json.dumps(line, ensure_ascii=False)


class ImportRefused(Exception):
    """The import would mix with messages the room already has, or a line is not valid."""


def import_room(name: str, lines: Iterable[str]) -> int:
    """Store exported lines in room `name` (created if missing, and empty); returns the count.

    Sequence numbers and times are kept. A post by someone who has an account of that name is
    theirs again; any other is a guest's.
    """
    room, _ = Room.objects.get_or_create(name=name)
    if Message.objects.filter(room=room).exists():
        raise ImportRefused(f"room {name!r} already has messages; import into an empty room")
    users = {user.get_username(): user for user in get_user_model().objects.all()}
    count, last_seq, pending = 0, room.last_seq, []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        message = _message_from_line(line, number, room, users)
        if message.seq <= last_seq:
            raise ImportRefused(f"line {number}: seq {message.seq} is not after {last_seq}")
        last_seq = message.seq
        pending.append(message)
        if len(pending) >= IMPORT_BATCH:
            count += _store(room, pending, last_seq)
            pending = []
    return count + _store(room, pending, last_seq)


def _message_from_line(line: str, number: int, room: Room, users: dict[str, Any]) -> Message:
    try:
        data = json.loads(line)
        seq, author, text = int(data["seq"]), str(data["author"]), str(data["text"])
        created_at = datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00"))
        edited = data.get("edited")
        edited_at = datetime.fromisoformat(edited.replace("Z", "+00:00")) if edited else None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ImportRefused(f"line {number}: not an exported message ({error})") from None
    user = None if data.get("guest", True) else users.get(author)
    return Message(
        room=room,
        seq=seq,
        author=user,
        author_name=author,
        body=text,
        created_at=created_at,
        edited_at=edited_at,
    )


def _store(room: Room, messages: list[Message], last_seq: int) -> int:
    with transaction.atomic():
        Message.objects.bulk_create(messages)
        Room.objects.filter(pk=room.pk).update(last_seq=last_seq)
    return len(messages)
