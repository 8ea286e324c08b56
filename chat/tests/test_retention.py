"""Retention and export: chat_prune in short transactions, the `pruned` frame on resume, and
chat_export / chat_import reading back what was written."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import retention, services
from chat.models import Message, Room
from chat.testing.ws import Connect, receive

pytestmark = [pytest.mark.django_db(transaction=True)]

OLD = timedelta(days=100)


def post(room: str, text: str, *, author: object = None, age: timedelta | None = None) -> int:
    """Store a post as the chat does; backdated by `age`. Returns its seq."""
    room_id = services.room_get_or_create(name=room).pk
    (stored,) = services.messages_create(
        [
            services.NewPost(
                room_name=room,
                room_id=room_id,
                author=author,  # type: ignore[arg-type]
                author_name=getattr(author, "username", "guest-abc123"),
                body=text,
                client_id=None,
            )
        ]
    )
    assert isinstance(stored, services.Stored)
    if age is not None:
        Message.objects.filter(room_id=room_id, seq=stored.message.seq).update(
            created_at=timezone.now() - age
        )
    return stored.message.seq


def seqs(room: str) -> list[int]:
    return list(
        Message.objects.filter(room__name=room).order_by("seq").values_list("seq", flat=True)
    )


def test_ages() -> None:
    assert retention.parse_age("90d") == timedelta(days=90)
    assert retention.parse_age("12h") == timedelta(hours=12)
    assert retention.parse_age("2w") == timedelta(weeks=2)
    for bad in ("90", "d", "-1d", "1y", "1.5d"):
        with pytest.raises(ValueError, match="is not an age"):
            retention.parse_age(bad)


def test_prune_deletes_what_is_older_in_batches_and_only_in_the_room_named() -> None:
    for n in range(25):
        post("old-and-new", f"old {n}", age=OLD)
    for n in range(5):
        post("old-and-new", f"new {n}")
    post("elsewhere", "old too", age=OLD)
    with CaptureQueriesContext(connection) as queries:
        (pruned,) = retention.prune(
            older_than=timedelta(days=90), room="old-and-new", batch=10, pause=0
        )
    assert (pruned.deleted, pruned.through) == (25, 25)
    assert seqs("old-and-new") == [26, 27, 28, 29, 30]
    assert seqs("elsewhere") == [1]
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 10 + 10 + 5, each in its own transaction


def test_a_writer_gets_in_between_two_batches() -> None:
    for n in range(30):
        post("busy", f"old {n}", age=OLD)
    pruning = threading.Thread(
        target=retention.prune,
        kwargs={"older_than": timedelta(days=90), "room": "busy", "batch": 10, "pause": 0.5},
    )
    pruning.start()
    try:
        deadline = time.monotonic() + 10
        while Message.objects.filter(room__name="busy").count() > 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # The first batch is committed and the prune waits before the next: a post goes in now,
        # while the prune is still running.
        assert post("busy", "written meanwhile") == 31
        assert pruning.is_alive()
    finally:
        pruning.join()
    assert seqs("busy") == [31]


def test_the_command_prunes_every_room_and_says_what_it_did() -> None:
    post("a", "old", age=OLD)
    post("b", "old", age=OLD)
    post("b", "new")
    out = io.StringIO()
    call_command("chat_prune", "--older-than", "90d", "--pause", "0", stdout=out)
    assert "2 message(s) deleted" in out.getvalue()
    assert (seqs("a"), seqs("b")) == ([], [2])
    with pytest.raises(CommandError):
        call_command("chat_prune", "--older-than", "ninety days")


async def test_a_client_resuming_inside_the_pruned_range_is_told(connect: Connect) -> None:
    for n in range(10):
        await database_sync_to_async(post)("pruned-room", f"m{n + 1}", age=OLD if n < 7 else None)
    await database_sync_to_async(retention.prune)(older_than=timedelta(days=90), pause=0)
    behind = await connect("pruned-room", query="after=3")
    assert await receive(behind) == {"type": "pruned", "before": 8}
    assert [(await receive(behind))["seq"] for _ in range(3)] == [8, 9, 10]
    # From inside what is kept: nothing to say, the next message comes first.
    current = await connect("pruned-room", query="after=8")
    assert (await receive(current))["seq"] == 9


async def test_a_room_pruned_entirely_says_where_it_will_go_on(connect: Connect) -> None:
    for n in range(4):
        await database_sync_to_async(post)("all-gone", f"m{n}", age=OLD)
    await database_sync_to_async(retention.prune)(older_than=timedelta(days=90), pause=0)
    socket = await connect("all-gone", query="after=1")
    assert await receive(socket) == {"type": "pruned", "before": 5}


def test_export_then_import_gives_the_same_room(tmp_path: Path) -> None:
    alice = get_user_model().objects.create_user("alice", password="pw-for-tests-only")
    post("source", "hello from a guest")
    post("source", "hello from alice", author=alice)
    post("source", 'ünïcode ✓ and "quotes"\nand a newline')
    exported = tmp_path / "source.jsonl"
    call_command("chat_export", "source", "-o", str(exported))
    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert [(line["seq"], line["author"], line["guest"]) for line in lines] == [
        (1, "guest-abc123", True),
        (2, "alice", False),
        (3, "guest-abc123", True),
    ]
    assert lines[2]["text"] == 'ünïcode ✓ and "quotes"\nand a newline'
    out = io.StringIO()
    call_command("chat_import", "copy", str(exported), stdout=out)
    assert "3 message(s) imported" in out.getvalue()
    copy = Room.objects.get(name="copy")
    assert copy.last_seq == 3
    assert Message.objects.get(room=copy, seq=2).author == alice
    again = io.StringIO()
    call_command("chat_export", "copy", stdout=again)
    assert [json.loads(line) for line in again.getvalue().splitlines()] == lines
    # The room goes on from there.
    assert post("copy", "next") == 4


def test_import_refuses_a_room_with_messages_and_lines_that_are_not_an_export(
    tmp_path: Path,
) -> None:
    post("busy-room", "already here")
    export = tmp_path / "x.jsonl"
    export.write_text(
        json.dumps({"seq": 1, "author": "a", "time": "2026-01-01T00:00:00Z", "text": "t"})
    )
    with pytest.raises(CommandError, match="already has messages"):
        call_command("chat_import", "busy-room", str(export))
    export.write_text('{"seq": "x"}\n')
    with pytest.raises(CommandError, match="line 1"):
        call_command("chat_import", "fresh-room", str(export))
    with pytest.raises(CommandError, match="no room"):
        call_command("chat_export", "no-such-room")
