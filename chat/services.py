"""Writes: rooms and messages. Synchronous; async callers run them off the event loop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils import timezone

from chat.models import Message, Room
from chat.sql import aware, in_list

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def room_get_or_create(*, name: str) -> Room:
    """The room called `name`, created if it does not exist yet."""
    room, _ = Room.objects.get_or_create(name=name)
    return room


@dataclass(frozen=True, slots=True)
class NewPost:
    """A post on its way to the database."""

    room_name: str
    # The room the poster's socket knows; None if the room had no message yet when it joined
    # (rooms are created by their first message, so a page view or a handshake stores nothing).
    room_id: int | None
    author: User | None
    author_name: str
    body: str
    client_id: str | None
    # A guest author's id (None for a signed-in author).
    guest_id: str | None = None
    # A post, or an edit or a delete of the post numbered `target_seq`...
    kind: int = Message.Kind.MESSAGE
    target_seq: int | None = None
    # ...which only its author may make, or a moderator.
    moderator: bool = False


@dataclass(slots=True)
class Event:
    """A row of the message table (a post, an edit, a delete) as the writer stores it: its
    columns, without a model instance (100 `Message` instances took 2.3 ms of a 12 ms batch)."""

    room_id: int
    seq: int
    author_id: int | None
    author_name: str
    guest_id: str | None
    body: str
    created_at: datetime
    client_id: str | None
    kind: int = Message.Kind.MESSAGE
    target_seq: int | None = None
    edited_at: datetime | None = None
    deleted: bool = False
    # The row's id if it was stored before this batch; None for a row this batch stores.
    pk: int | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """A post's message, and whether this call stored it (False: a resend of a stored one)."""

    message: Event
    created: bool


@dataclass(frozen=True, slots=True)
class Refused:
    """An edit or a delete that may not be made: `code` is an error frame's (chat/protocol.py)."""

    code: str
    detail: str


NOT_FOUND = Refused("not_found", "There is no such message in this room (or it was deleted).")
NOT_YOURS = Refused("forbidden", "Only its author or a moderator may change a message.")


def messages_create(posts: list[NewPost]) -> list[Stored | Refused | None]:
    """Store posts in one transaction; for each post, its Stored, or None if its room is gone.

    Each room's next sequence numbers are handed out under that room's row lock (PostgreSQL) or
    the immediate write lock (SQLite), held until commit, so sequences are 1, 2, 3… with no gap
    or repeat across every process. A post whose `client_id` the room has already stored (or
    that appears twice in `posts`) is a resend: the stored message is returned, nothing written.
    A post without a room id creates its room; one whose room id no longer exists (the room was
    deleted) is not stored. Storing many posts at once is the group commit that keeps the
    database off the hot path.

    Edits and deletes (`kind`) are numbered and stored the same way, and applied to the post
    they change in the same transaction; one of a post that is not in the room (or deleted),
    or not the changer's own (unless they moderate), is Refused and changes nothing.
    """
    now = timezone.now()
    results: list[Stored | Refused | None] = []
    new: list[Event] = []
    with transaction.atomic():
        by_id, by_name = _lock_rooms(posts)
        changes = _Changes(posts, by_id, by_name)
        client_ids = {post.client_id for post in posts if post.client_id is not None}
        known: dict[tuple[int, str | None], Event] = {}
        if client_ids and by_id:
            known = {(e.room_id, e.client_id): e for e in _resends(set(by_id), client_ids)}
        for post in posts:
            room = by_id.get(post.room_id) if post.room_id is not None else by_name[post.room_name]
            if room is None:
                results.append(None)
                continue
            key = (room.pk, post.client_id)
            if post.client_id is not None and key in known:
                results.append(Stored(known[key], created=False))
                continue
            author = (
                post.author if post.author is not None and post.author.is_authenticated else None
            )
            if post.kind != Message.Kind.MESSAGE:
                refused = changes.apply(post, room.pk, author, now)
                if refused is not None:
                    results.append(refused)
                    continue
            room.last_seq += 1
            message = Event(
                room_id=room.pk,
                seq=room.last_seq,
                author_id=author.pk if author is not None else None,
                author_name=post.author_name,
                guest_id=post.guest_id if author is None else None,
                body=post.body if post.kind != Message.Kind.DELETE else "",
                created_at=now,
                client_id=post.client_id,
                kind=post.kind,
                target_seq=post.target_seq,
            )
            new.append(message)
            changes.created(message)
            if post.client_id is not None:
                known[key] = message
            results.append(Stored(message, created=True))
        if new:
            _insert_messages(new)
            changes.save()
            _move_rooms({by_id[message.room_id] for message in new})
    return results


class _Changes:
    """The edits and deletes of one batch, applied to the posts they change.

    The posts are read in one query, before the batch is numbered; a post stored earlier in
    the same batch is changed before it is inserted, any other is updated after the inserts.
    """

    def __init__(
        self,
        posts: list[NewPost],
        by_id: dict[int, _LockedRoom],
        by_name: dict[str, _LockedRoom],
    ) -> None:
        self.posts: dict[tuple[int, int], Message | Event] = {}
        self.edits: dict[tuple[int, int], list[Event]] = {}
        self.updated: dict[tuple[int, int], Message | Event] = {}
        targets = set()
        for post in posts:
            if post.kind != Message.Kind.MESSAGE and post.target_seq is not None:
                room = (
                    by_id.get(post.room_id) if post.room_id is not None else by_name[post.room_name]
                )
                if room is not None:
                    targets.add((room.pk, post.target_seq))
        if not targets:
            return
        room_ids = {room_id for room_id, _ in targets}
        seqs = {seq for _, seq in targets}
        for message in Message.objects.filter(
            room_id__in=room_ids, seq__in=seqs, kind=Message.Kind.MESSAGE
        ).order_by():
            self.posts[message.room_id, message.seq] = message

    def apply(
        self, post: NewPost, room_id: int, author: User | None, now: datetime
    ) -> Refused | None:
        """Change the post `post` targets, or say why not."""
        assert post.target_seq is not None
        key = (room_id, post.target_seq)
        target = self.posts.get(key)
        if target is None or target.deleted:
            return NOT_FOUND
        if author is not None:
            own = target.author_id == author.pk
        else:
            own = post.guest_id is not None and target.guest_id == post.guest_id
        if not (own or post.moderator):
            return NOT_YOURS
        if post.kind == Message.Kind.EDIT:
            target.body, target.edited_at = post.body, now
        else:
            target.body, target.deleted = "", True
            # A deleted post's words are never sent again: not even in the edits of it.
            for edit in self.edits.get(key, ()):
                edit.body = ""
        if target.pk is not None:
            self.updated[key] = target
        return None

    def created(self, message: Event) -> None:
        """A post, edit or delete this batch stores."""
        key = (message.room_id, message.seq)
        if message.kind == Message.Kind.MESSAGE:
            self.posts[key] = message
        elif message.kind == Message.Kind.EDIT and message.target_seq is not None:
            self.edits.setdefault((message.room_id, message.target_seq), []).append(message)

    def save(self) -> None:
        """Write the changed posts that were stored before this batch."""
        for (room_id, seq), post in self.updated.items():
            assert post.pk is not None, "only posts stored before this batch are updated"
            Message.objects.filter(pk=post.pk).update(
                body=post.body, edited_at=post.edited_at, deleted=post.deleted
            )
            if post.deleted:
                Message.objects.filter(
                    room_id=room_id, target_seq=seq, kind=Message.Kind.EDIT
                ).update(body="")


@dataclass(slots=True, eq=False)
class _LockedRoom:
    """A room of the batch, locked until commit: where its sequence stands."""

    pk: int
    name: str
    last_seq: int


def _lock_rooms(posts: list[NewPost]) -> tuple[dict[int, _LockedRoom], dict[str, _LockedRoom]]:
    """Lock the rooms of a batch, creating those named by posts without a room id.

    One query locks every room of the batch, in id order, so that two writers never wait on
    each other in a cycle. Rooms to create are inserted first (a concurrent creator's row wins
    the conflict, and both then lock the same row).
    """
    ids = {post.room_id for post in posts if post.room_id is not None}
    names = {post.room_name for post in posts if post.room_id is None}
    rooms = _select_rooms_for_update(ids, names)
    missing = names - {room.name for room in rooms}
    if missing:
        Room.objects.bulk_create(
            [Room(name=name) for name in sorted(missing)], ignore_conflicts=True
        )
        rooms = _select_rooms_for_update(ids, names)
    return {room.pk: room for room in rooms}, {room.name: room for room in rooms}


# The writer's statements are SQL of its own: compiled by the ORM, the lock, the resend lookup
# and the rooms' update took 5 ms of a 12 ms batch of 100 posts on PostgreSQL, 0.3 ms as SQL
# (docs/benchmarks.md, "PostgreSQL").


def _select_rooms_for_update(ids: set[int], names: set[str]) -> list[_LockedRoom]:
    conditions: list[str] = []
    params: list[Any] = []
    if ids:
        sql, values = in_list(ids)
        conditions.append(f"id {sql}")
        params += values
    if names:
        sql, values = in_list(names)
        conditions.append(f"name {sql}")
        params += values
    if not conditions:
        return []
    table = connection.ops.quote_name(Room._meta.db_table)
    # SQLite has no row locks: the transaction's IMMEDIATE write lock serialises writers.
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, name, last_seq FROM {table} WHERE {' OR '.join(conditions)} "
            f"ORDER BY id{lock}",
            params,
        )
        return [_LockedRoom(*row) for row in cursor.fetchall()]


_INSERT_COLUMNS = (
    "room_id",
    "seq",
    "author_id",
    "author_name",
    "guest_id",
    "body",
    "created_at",
    "client_id",
    "kind",
    "target_seq",
    "edited_at",
    "deleted",
)
# What a stored row is read back as (an Event): the same, and its id.
_EVENT_COLUMNS = (*_INSERT_COLUMNS, "id")


def _resends(room_ids: set[int], client_ids: set[str]) -> list[Event]:
    """The stored rows of these rooms carrying any of these client ids."""
    table = connection.ops.quote_name(Message._meta.db_table)
    rooms_sql, rooms = in_list(room_ids)
    ids_sql, ids = in_list(client_ids)
    with connection.cursor() as cursor:
        # No ORDER BY: any order will do for a lookup.
        cursor.execute(
            f"SELECT {', '.join(_EVENT_COLUMNS)} FROM {table} "
            f"WHERE room_id {rooms_sql} AND client_id {ids_sql}",
            rooms + ids,
        )
        rows = cursor.fetchall()
    return [
        Event(
            room_id=row[0],
            seq=row[1],
            author_id=row[2],
            author_name=row[3],
            guest_id=row[4],
            body=row[5],
            created_at=aware(row[6]) or row[6],
            client_id=row[7],
            kind=row[8],
            target_seq=row[9],
            edited_at=aware(row[10]),
            deleted=bool(row[11]),
            pk=row[12],
        )
        for row in rows
    ]


def _move_rooms(rooms: set[_LockedRoom]) -> None:
    """Store where each room's sequence now stands, in one statement."""
    table = connection.ops.quote_name(Room._meta.db_table)
    cases = " ".join(["WHEN %s THEN %s"] * len(rooms))
    ids_sql, ids = in_list(room.pk for room in rooms)
    params: list[Any] = [value for room in rooms for value in (room.pk, room.last_seq)]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET last_seq = CASE id {cases} END WHERE id {ids_sql}", params + ids
        )


def _insert_messages(messages: list[Event]) -> None:
    """INSERT the rows with one executemany.

    `bulk_create` does the same, but compiles every row through the ORM: 20.5 µs a row against
    10 µs here (best of 20 batches of 100, SQLite, docs/benchmarks.md), on the thread every
    burst of posts waits for. The rows need no ids back (frames carry the room's `seq`).
    """
    table = connection.ops.quote_name(Message._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(column) for column in _INSERT_COLUMNS)
    placeholders = ", ".join(["%s"] * len(_INSERT_COLUMNS))
    # Every row of a batch has the same created_at: adapt it for the database once.
    created = {
        m.created_at: connection.ops.adapt_datetimefield_value(m.created_at) for m in messages
    }
    rows = [
        (
            m.room_id,
            m.seq,
            m.author_id,
            m.author_name,
            m.guest_id,
            m.body,
            created[m.created_at],
            m.client_id,
            m.kind,
            m.target_seq,
            None if m.edited_at is None else connection.ops.adapt_datetimefield_value(m.edited_at),
            m.deleted,
        )
        for m in messages
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # COPY: one statement, rows adapted in C. As an executemany, each INSERT is parsed
            # and run alone; a batch of 100 took 4.7 ms of the client's time that way, against
            # 1.2 ms as a COPY (docs/benchmarks.md, "PostgreSQL").
            with (
                connection.connection.cursor() as raw,
                raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
        else:
            cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})", rows)


def message_create(
    *,
    room_id: int,
    author: User | None,
    author_name: str,
    body: str,
    client_id: str | None,
) -> tuple[Event, bool]:
    """Store one post in an existing room (see `messages_create`)."""
    post = NewPost(
        room_name=Room.objects.values_list("name", flat=True).get(pk=room_id),
        room_id=room_id,
        author=author,
        author_name=author_name,
        body=body,
        client_id=client_id,
    )
    stored = messages_create([post])[0]
    if not isinstance(stored, Stored):
        raise Room.DoesNotExist(room_id)
    return stored.message, stored.created
