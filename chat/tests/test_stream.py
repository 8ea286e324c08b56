"""MessageStream on its own: no ASGI, no database — a list of stored rows and a recording socket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from chat import stream
from chat.models import Message
from chat.selectors import MessageRow
from chat.stream import MessageStream
from chat.transport import OutFrame

STORED_AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def row(seq: int) -> MessageRow:
    return MessageRow(seq, f"m{seq}", "ada", STORED_AT, None)


def frames(*seqs: int) -> list[OutFrame]:
    return [OutFrame(seq, stream.encode(row(seq))) for seq in seqs]


class RecordingSocket:
    """A socket that keeps the sequence numbers written to it, in order."""

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def send(self, frames: list[OutFrame], payload: bytes | None = None) -> None:
        self.seqs.extend(frame.seq for frame in frames)

    def send_text(self, text: str) -> None:
        raise AssertionError("a stream sends message frames only")

    async def drained(self) -> None:
        return None

    def buffered(self) -> int:
        return 0

    async def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


class Database:
    """Stored rows 1..N, readable as the consumer's rows_after reads them."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.reads: list[tuple[int, int]] = []
        self.gate: asyncio.Event | None = None

    async def rows_after(self, after: int, limit: int) -> list[MessageRow]:
        self.reads.append((after, limit))
        if self.gate is not None:
            await self.gate.wait()
        return [row(seq) for seq in range(after + 1, min(self.count, after + limit) + 1)]


def attached(database: Database) -> tuple[MessageStream, RecordingSocket]:
    message_stream = MessageStream(database.rows_after, room_name="r")
    socket = RecordingSocket()
    message_stream.attach(socket)
    return message_stream, socket


async def test_history_then_backlog_then_live_each_once_in_order() -> None:
    database = Database(5)
    message_stream, socket = attached(database)
    # Joined at 3: the hub hands 4 and 5 while the history (1–3) is being sent.
    message_stream.deliver(frames(4, 5), None)
    await message_stream.send_stored([row(1), row(2), row(3)])
    await message_stream.go_live()
    message_stream.deliver(frames(6), None)
    assert socket.seqs == [1, 2, 3, 4, 5, 6]


async def test_what_the_history_already_covered_is_not_sent_twice() -> None:
    message_stream, socket = attached(Database(4))
    message_stream.deliver(frames(3, 4), None)
    await message_stream.send_stored([row(1), row(2), row(3), row(4)])
    await message_stream.go_live()
    message_stream.deliver(frames(4), None)  # a live duplicate, too
    assert socket.seqs == [1, 2, 3, 4]


async def test_a_resume_sends_only_what_follows_the_clients_position() -> None:
    database = Database(stream.CATCH_UP_PAGE + 30)
    message_stream, socket = attached(database)
    message_stream.resume_after(10)
    await message_stream.catch_up()
    await message_stream.go_live()
    assert socket.seqs == list(range(11, stream.CATCH_UP_PAGE + 31))
    # In pages: the first from 10, the next from where it stopped.
    assert database.reads == [(10, stream.CATCH_UP_PAGE), (stream.CATCH_UP_PAGE + 10, 200)]


async def test_a_backlog_that_starts_past_the_history_is_filled_from_the_database() -> None:
    database = Database(8)
    message_stream, socket = attached(database)
    await message_stream.send_stored([row(1), row(2)])
    message_stream.deliver(frames(7, 8), None)  # 3–6 never came live
    await message_stream.go_live()
    assert socket.seqs == list(range(1, 9))
    assert database.reads == [(2, 4)]


async def test_a_live_gap_is_filled_from_the_database_in_a_task_of_its_own() -> None:
    database = Database(6)
    message_stream, socket = attached(database)
    await message_stream.send_stored([row(1), row(2)])
    await message_stream.go_live()
    database.gate = asyncio.Event()
    message_stream.deliver(frames(5), None)  # 3 and 4 skipped
    assert not message_stream.live
    # While the gap is being read, the next delivery waits behind it, in order.
    message_stream.deliver(frames(6), None)
    assert socket.seqs == [1, 2]
    database.gate.set()
    assert message_stream.resyncing is not None
    await message_stream.resyncing
    assert socket.seqs == [1, 2, 3, 4, 5, 6]
    assert message_stream.live


async def test_a_backlog_that_overflows_is_read_again_from_the_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stream, "MAX_BACKLOG", 3)
    database = Database(10)
    message_stream, socket = attached(database)
    message_stream.deliver(frames(1, 2), None)
    message_stream.deliver(frames(3, 4), None)  # past the bound: dropped, not kept
    assert message_stream.backlog == []
    await message_stream.go_live()
    assert socket.seqs == list(range(1, 11))


async def test_closing_cancels_a_gap_fill_in_progress() -> None:
    database = Database(6)
    message_stream, socket = attached(database)
    await message_stream.go_live()
    database.gate = asyncio.Event()
    message_stream.deliver(frames(3), None)
    assert message_stream.resyncing is not None
    message_stream.close()
    await asyncio.gather(message_stream.resyncing, return_exceptions=True)
    assert message_stream.resyncing.cancelled()
    assert socket.seqs == []


async def test_catch_up_slices_let_other_work_run_between_them() -> None:
    database = Database(3 * stream.CATCH_UP_SLICE)
    message_stream, socket = attached(database)
    turns: list[int] = []

    async def other_socket() -> None:
        for _ in range(3):
            turns.append(len(socket.seqs))
            await asyncio.sleep(0)

    await asyncio.gather(message_stream.catch_up(), other_socket())
    assert socket.seqs == list(range(1, 3 * stream.CATCH_UP_SLICE + 1))
    # The other task ran before the catch-up finished, not only after it.
    assert turns[1] < 3 * stream.CATCH_UP_SLICE


async def test_a_tutorial_client_is_sent_posts_only_and_moves_past_the_rest() -> None:
    """Edits and deletes (not `plain`) are for clients that speak the protocol: a tutorial
    client's stream skips them, live or stored, without taking the skip for a gap."""
    edit = MessageRow(3, "new", "ada", STORED_AT, None, 1, Message.Kind.EDIT, 1)
    deleted = MessageRow(2, "", "ada", STORED_AT, None, 1, Message.Kind.MESSAGE, None, None, True)
    database = Database(0)
    message_stream, socket = attached(database)
    message_stream.plain_only = True
    await message_stream.send_stored([row(1), deleted, edit])
    await message_stream.go_live()
    message_stream.deliver([*frames(4), OutFrame(5, "{}", plain=False)], None, True)
    message_stream.deliver(frames(6), None)
    assert socket.seqs == [1, 4, 6]
    assert message_stream.last_seq == 6
    assert database.reads == []
