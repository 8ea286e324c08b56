"""Invariant 1 at the consumer: stored before acknowledged, every message once, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User

from chat import fanout, protocol, selectors, services
from chat.events import batch_event
from chat.models import Message, Room
from chat.rooms import group_name
from chat.routing import websocket_urlpatterns
from chat.testing.ws import Connect, receive

pytestmark = [pytest.mark.django_db(transaction=True)]

Reconcile = Callable[[], Awaitable[None]]


@pytest.fixture
def reconcile(monkeypatch: pytest.MonkeyPatch) -> Reconcile:
    """The hub's database backstop, run only when the test calls this (never on a timer)."""
    monkeypatch.setattr(fanout, "RECONCILE_INTERVAL", 3600)

    async def run() -> None:
        await fanout.hubs.get().reconcile()

    return run


@database_sync_to_async
def store(room: str, count: int, author: str = "seed") -> int:
    """Store `count` messages in a room without broadcasting them; return the room id."""
    room_id = services.room_get_or_create(name=room).pk
    for n in range(count):
        services.message_create(
            room_id=room_id, author=None, author_name=author, body=f"m{n + 1}", client_id=None
        )
    return room_id


@database_sync_to_async
def stored(room: str) -> list[tuple[int, str]]:
    return list(Message.objects.filter(room__name=room).order_by("seq").values_list("seq", "body"))


async def seqs_until(communicator: WebsocketCommunicator, last: int) -> list[int]:
    """Sequence numbers of the message frames received until `last` arrives."""
    seen: list[int] = []
    while not seen or seen[-1] < last:
        frame = await receive(communicator)
        if frame["type"] == "message":
            seen.append(frame["seq"])
    return seen


async def test_post_is_stored_then_acknowledged_then_broadcast(connect: Connect) -> None:
    alice = await connect("lobby")
    bob = await connect("lobby")

    await alice.send_json_to({"type": "message", "message": "hello", "client_id": "a1"})

    assert await receive(alice) == {"type": "ack", "client_id": "a1", "seq": 1}
    assert await stored("lobby") == [(1, "hello")]
    for communicator in (alice, bob):
        frame = await receive(communicator)
        # `guest`: the author has no account (these sockets are guests').
        assert set(frame) == {"type", "seq", "message", "author", "time", "client_id", "guest"}
        assert frame["guest"] is True
        assert frame["client_id"] == "a1"
        assert (frame["type"], frame["seq"], frame["message"]) == ("message", 1, "hello")
        assert frame["author"].startswith("guest-")
        assert frame["time"].endswith("Z")


async def test_tutorial_clients_get_only_message_frames(connect: Connect) -> None:
    alice = await connect("lobby")
    await alice.send_json_to({"message": "hi"})
    await alice.send_json_to({"message": "marker"})
    # The marker's frame comes next: no ack or anything else came before, between or after.
    frames = [await receive(alice), await receive(alice)]
    assert [(f["type"], f["seq"], f["message"]) for f in frames] == [
        ("message", 1, "hi"),
        ("message", 2, "marker"),
    ]


async def test_resend_is_acknowledged_again_but_stored_and_broadcast_once(connect: Connect) -> None:
    alice = await connect("lobby")
    bob = await connect("lobby")
    post = {"type": "message", "message": "once", "client_id": "same-id"}

    await alice.send_json_to(post)
    assert await receive(alice) == {"type": "ack", "client_id": "same-id", "seq": 1}
    assert (await receive(bob))["seq"] == 1
    await alice.send_json_to(post)

    # The ack of the resend comes before the first broadcast reaches alice or after; either way
    # the second ack names the same sequence number and nothing else is broadcast.
    frames = [await receive(alice), await receive(alice)]
    assert sorted(f["type"] for f in frames) == ["ack", "message"]
    assert all(f["seq"] == 1 for f in frames)
    # A second broadcast of the resend would reach both before the next post does.
    await alice.send_json_to({"type": "message", "message": "next", "client_id": "next-id"})
    assert await receive(alice) == {"type": "ack", "client_id": "next-id", "seq": 2}
    for communicator in (alice, bob):
        frame = await receive(communicator)
        assert (frame["type"], frame["seq"], frame["message"]) == ("message", 2, "next")
    assert await stored("lobby") == [(1, "once"), (2, "next")]


async def test_joining_client_gets_the_latest_50_oldest_first(connect: Connect) -> None:
    await store("busy", 60)
    carol = await connect("busy")
    frames = [await receive(carol) for _ in range(protocol.HISTORY_ON_JOIN)]
    assert [f["seq"] for f in frames] == list(range(11, 61))
    assert [f["message"] for f in frames[:2]] == ["m11", "m12"]
    # The history ends there: carol's own post is the next frame she gets.
    await carol.send_json_to({"message": "marker"})
    frame = await receive(carol)
    assert (frame["type"], frame["seq"], frame["message"]) == ("message", 61, "marker")


async def test_history_pages_back_and_forward(connect: Connect) -> None:
    await store("busy", 60)
    carol = await connect("busy")
    await seqs_until(carol, 60)

    await carol.send_json_to({"type": "history", "before": 11, "limit": 50})
    older = await receive(carol)
    assert older["type"] == "history"
    assert [m["seq"] for m in older["messages"]] == list(range(1, 11))

    await carol.send_json_to({"type": "history", "after": 20, "limit": 3})
    assert [m["seq"] for m in (await receive(carol))["messages"]] == [21, 22, 23]

    await carol.send_json_to({"type": "history", "before": 1})
    assert (await receive(carol))["messages"] == []


async def test_resume_sends_everything_after_the_position_then_live(connect: Connect) -> None:
    await store("busy", 1200)
    dave = await connect("busy", query="after=3")
    assert await seqs_until(dave, 1200) == list(range(4, 1201))
    assert await receive(dave) == {"type": "synced", "last_seq": 1200}

    alice = await connect("busy", query="after=1200")
    assert await receive(alice) == {"type": "synced", "last_seq": 1200}
    await alice.send_json_to({"message": "live"})
    assert (await receive(alice))["seq"] == 1201
    assert (await receive(dave))["seq"] == 1201


async def test_resume_beyond_the_room_starts_afresh(connect: Connect) -> None:
    await store("small", 3)
    eve = await connect("small", query="after=999")
    assert await seqs_until(eve, 3) == [1, 2, 3]


async def test_bad_resume_position_is_an_error_then_the_latest(connect: Connect) -> None:
    await store("small", 2)
    eve = await connect("small", query="after=-5")
    assert (await receive(eve))["code"] == "bad_resume"
    assert await seqs_until(eve, 2) == [1, 2]


async def test_resume_while_messages_keep_arriving_has_no_gap_or_duplicate(
    connect: Connect,
) -> None:
    await store("race", 300)
    writer = await connect("race", query="after=300")

    async def keep_posting() -> None:
        for n in range(100):
            await writer.send_json_to({"message": f"live {n}"})

    posting = asyncio.create_task(keep_posting())
    readers = [await connect("race", query=f"after={after}") for after in (0, 150, 299)]
    await posting
    for reader, after in zip(readers, (0, 150, 299), strict=True):
        assert await seqs_until(reader, 400) == list(range(after + 1, 401))


@pytest.mark.usefixtures("reconcile")
async def test_a_gap_in_the_live_stream_is_filled_from_the_database(connect: Connect) -> None:
    frank = await connect("gappy")
    room_id = await store("gappy", 3)
    # Messages 1 and 2 were never published (as if the layer lost them); 3 arrives live.
    message = await database_sync_to_async(Message.objects.get)(room_id=room_id, seq=3)
    frame = protocol.encode(protocol.message_frame(message))
    await get_channel_layer().group_send(
        group_name("gappy"),
        batch_event("gappy", room_id, [(3, frame)]),
    )
    assert [(await receive(frank, wait=1))["message"] for _ in range(3)] == ["m1", "m2", "m3"]


async def test_messages_whose_publish_was_lost_arrive_by_reconciling(
    connect: Connect, reconcile: Reconcile
) -> None:
    grace = await connect("quiet")
    await store("quiet", 2)  # stored, never published, and nothing follows them
    await reconcile()
    assert [(await receive(grace))["message"] for _ in range(2)] == ["m1", "m2"]


async def test_concurrent_posts_get_sequences_one_to_n_and_everyone_sees_all(
    connect: Connect,
) -> None:
    writers = [await connect("crowd") for _ in range(5)]
    per_writer = 20

    async def post_all(index: int, communicator: WebsocketCommunicator) -> None:
        for n in range(per_writer):
            await communicator.send_json_to(
                {"message": f"w{index}-{n}", "client_id": f"{index}-{n}"}
            )

    await asyncio.gather(*(post_all(i, w) for i, w in enumerate(writers)))
    total = per_writer * len(writers)
    for communicator in writers:
        frames: list[dict[str, Any]] = []
        while len(frames) < total:
            frame = await receive(communicator)
            if frame["type"] == "message":
                frames.append(frame)
        assert [f["seq"] for f in frames] == list(range(1, total + 1))
    rows = await stored("crowd")
    assert [seq for seq, _ in rows] == list(range(1, total + 1))
    assert len({body for _, body in rows}) == total
    assert (await database_sync_to_async(Room.objects.get)(name="crowd")).last_seq == total


async def test_author_is_assigned_by_the_server(layer: str) -> None:
    user = await database_sync_to_async(User.objects.create_user)("ada", password="x")
    communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), "/ws/chat/lobby/")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"message": "signed in"})
    assert (await receive(communicator))["author"] == "ada"
    await communicator.disconnect()
    message = await database_sync_to_async(Message.objects.get)(room__name="lobby")
    assert (message.author_id, message.author_name) == (user.pk, "ada")


async def test_synced_marks_the_end_of_the_history_when_asked_for(connect: Connect) -> None:
    quiet = await connect("quiet-room", query="sync=1")
    assert await receive(quiet) == {"type": "synced", "last_seq": 0}

    await store("busy", 60)
    fresh = await connect("busy", query="sync=1")
    assert await seqs_until(fresh, 60) == list(range(11, 61))
    assert await receive(fresh) == {"type": "synced", "last_seq": 60}

    resumed = await connect("busy", query="after=58")
    assert await seqs_until(resumed, 60) == [59, 60]
    assert await receive(resumed) == {"type": "synced", "last_seq": 60}


async def test_tutorial_clients_are_not_sent_synced(connect: Connect) -> None:
    await store("busy", 2)
    plain = await connect("busy")
    assert await seqs_until(plain, 2) == [1, 2]
    # Had a synced frame been sent, it would come before the socket's own post.
    await plain.send_json_to({"message": "marker"})
    frame = await receive(plain)
    assert (frame["type"], frame["seq"], frame["message"]) == ("message", 3, "marker")


async def test_posts_arriving_while_a_client_joins_are_not_lost_to_its_history(
    connect: Connect, monkeypatch: pytest.MonkeyPatch, reconcile: Reconcile
) -> None:
    # A burst lands between the join and the history read: the history must stop where the
    # live stream started, or the newest page would hide the burst's first messages (this
    # lost 50 messages to a client in a two-process benchmark).
    real_before = selectors.rows_before

    def burst_then_read(**kwargs: Any) -> list[selectors.MessageRow]:
        room_id = services.room_get_or_create(name="burst").pk
        for n in range(60):
            services.message_create(
                room_id=room_id, author=None, author_name="x", body=f"b{n}", client_id=None
            )
        return real_before(**kwargs)

    # The room exists (rooms are created by their first message), so joining reads history.
    first = await connect("burst")
    await first.send_json_to({"message": "first"})
    await receive(first)
    monkeypatch.setattr(selectors, "rows_before", burst_then_read)
    late = await connect("burst")
    # Its history stops where its live stream started, before the burst.
    assert (await receive(late))["seq"] == 1
    # None of the burst was published: the hub's reconcile delivers it, all of it, in order.
    await reconcile()
    seqs = [(await receive(late))["seq"] for _ in range(60)]
    assert seqs == list(range(2, 62))


async def test_a_reconcile_during_a_commit_waits_for_the_posters_ack(
    connect: Connect, reconcile: Reconcile, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ack comes before the message, even when the database backstop reads the post
    between its commit and its acknowledgement (a fuzz run once saw the message first)."""
    poster = await connect("race", query="sync=1")
    await receive(poster)  # synced
    await poster.send_json_to({"message": "first", "client_id": "c0"})
    assert (await receive(poster))["type"] == "ack"
    assert (await receive(poster))["type"] == "message"

    committed, release = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    real = services.messages_create

    def commit_then_hold(posts: list[services.NewPost]) -> Any:
        results = real(posts)  # committed: a reader can see it
        loop.call_soon_threadsafe(committed.set)
        asyncio.run_coroutine_threadsafe(release.wait(), loop).result(timeout=10)
        return results

    monkeypatch.setattr(services, "messages_create", commit_then_hold)
    await poster.send_json_to({"message": "second", "client_id": "c1"})
    await asyncio.wait_for(committed.wait(), 5)
    backstop = asyncio.ensure_future(reconcile())
    await asyncio.sleep(0.1)  # the backstop has read the database and is ready to deliver
    release.set()
    await backstop
    first, then = await receive(poster), await receive(poster)
    assert (first["type"], first.get("client_id")) == ("ack", "c1")
    assert (then["type"], then["seq"]) == ("message", 2)
