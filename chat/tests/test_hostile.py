"""A hostile (or unlucky) client harms only itself: in the consumer, the writer and the hub.

Each test is one finding of the security review, tried the way an attacker would, with the
assertion that only the attacker is refused and that everyone else's work goes on. The same
attacks against a real daphne are in test_hostile_server.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.db import OperationalError
from django.test import AsyncClient

from chat import consumers, fanout, protocol, selectors, services
from chat.models import Message, Room
from chat.people import GUEST_COOKIE
from chat.protocol import MAX_FRAME_BYTES
from chat.testing.ws import ORIGIN, Connect, receive
from chat.transport import CLOSE_SLOW_READER, AsgiSocket, DirectSocket, OutFrame
from chat.writer import Failed, Outcome, PostWriter, writers
from mysite.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]


async def frames_until(
    communicator: WebsocketCommunicator, done: Any, wait: float = 5
) -> list[dict[str, Any]]:
    """Frames a communicator is sent, up to and including the first for which `done` holds."""
    frames: list[dict[str, Any]] = []
    while not frames or not done(frames[-1]):
        frames.append(await receive(communicator, wait=wait))
    return frames


async def post_and_collect(
    communicator: WebsocketCommunicator, count: int, prefix: str
) -> dict[str, str]:
    """Post `count` messages with client ids, back to back; return each id's outcome type."""
    for n in range(count):
        await communicator.send_json_to({"message": f"{prefix} {n}", "client_id": f"{prefix}{n}"})
    outcomes: dict[str, str] = {}
    while len(outcomes) < count:
        frame = await receive(communicator)
        if frame["type"] in {"ack", "error"}:
            outcomes[frame["client_id"]] = frame.get("code", "ack")
    return outcomes


# --- 1. one poster fails everyone's batch ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param('{"message": "x\\ud800", "client_id": "p1"}', "message", id="surrogate"),
        pytest.param('{"message": "ok", "client_id": "\\udfff"}', "client_id", id="sur-id"),
        pytest.param('{"message": "ok", "client_id": "a\\u0000"}', "client_id", id="nul-id"),
        pytest.param('{"message": "a\\u0000b", "client_id": "p1"}', "message", id="nul"),
    ],
)
async def test_text_no_database_can_store_is_refused_to_its_sender_alone(
    connect: Connect, raw: str, field: str
) -> None:
    attacker = await connect("lobby")
    bystander = await connect("elsewhere")
    await bystander.send_json_to({"message": "before", "client_id": "b0"})
    await attacker.send_to(text_data=raw)
    await bystander.send_json_to({"message": "after", "client_id": "b1"})

    error = await receive(attacker)
    assert error["type"] == "error"
    assert error["code"] == "bad_frame"
    assert f"`{field}`" in error["detail"]
    # The error frame names the post when its client_id was valid, so the client drops it.
    assert error.get("client_id") == ("p1" if field == "message" else None)
    frames = await frames_until(bystander, lambda f: f["type"] == "message" and f["seq"] == 2)
    assert [f["client_id"] for f in frames if f["type"] == "ack"] == ["b0", "b1"]
    assert [f["message"] for f in frames if f["type"] == "message"] == ["before", "after"]
    assert await database_sync_to_async(Message.objects.count)() == 2


class RecordingPoster:
    """A poster that keeps the outcomes the writer gives it."""

    def __init__(self) -> None:
        self.outcomes: dict[str | None, Outcome] = {}
        self.settled = asyncio.Event()
        self.expected = 0

    def post_settled(self, outcome: Outcome, *, client_id: str | None) -> None:
        self.outcomes[client_id] = outcome
        if len(self.outcomes) >= self.expected:
            self.settled.set()


def new_post(room: str, client_id: str, body: str = "hi", room_id: int | None = None) -> Any:
    return services.NewPost(
        room_name=room,
        room_id=room_id,
        author=None,
        author_name="x",
        body=body,
        client_id=client_id,
    )


@pytest.mark.usefixtures("layer")
async def test_a_batch_the_database_refuses_fails_only_the_post_at_fault() -> None:
    # In depth: if a post the edge should have refused reaches the database anyway, the group
    # commit finds it by halving the batch and stores every other post.
    writer = PostWriter()
    poster = RecordingPoster()
    posts = [new_post("a" if n % 2 else "b", f"c{n}") for n in range(16)]
    posts[11] = new_post("a", "c11", body="poison \ud800")
    poster.expected = len(posts)
    for post in posts:  # all queued before the writer runs: one batch
        writer.submit(post.room_name, post, poster)
    await asyncio.wait_for(poster.settled.wait(), timeout=10)
    await writer.close()

    assert poster.outcomes.pop("c11") == Failed(permanent=True)
    assert all(isinstance(o, services.Stored) and o.created for o in poster.outcomes.values())
    stored = await database_sync_to_async(
        lambda: sorted(Message.objects.values_list("room__name", "seq"))
    )()
    # Sequence numbers stay gap-free in both rooms.
    assert stored == [("a", n) for n in range(1, 8)] + [("b", n) for n in range(1, 9)]


async def test_a_refused_post_is_answered_rejected_with_its_client_id(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "is_storable", lambda text: True)  # as if the edge missed it
    attacker = await connect("lobby")
    bystander = await connect("lobby")
    await attacker.send_to(text_data='{"message": "x\\ud800", "client_id": "bad"}')
    outcomes = await post_and_collect(bystander, 20, "ok")

    error = await receive(attacker)
    assert (error["type"], error["code"], error["client_id"]) == ("error", "rejected", "bad")
    assert set(outcomes.values()) == {"ack"}


async def test_posts_to_a_deleted_room_fail_alone_and_its_sockets_are_closed(
    connect: Connect,
) -> None:
    doomed = await connect("doomed")
    listener = await connect("doomed")
    bystander = await connect("elsewhere")
    await doomed.send_json_to({"message": "first", "client_id": "d0"})
    await frames_until(doomed, lambda f: f["type"] == "message")
    await database_sync_to_async(lambda: Room.objects.filter(name="doomed").delete())()

    await doomed.send_json_to({"message": "into the void", "client_id": "d1"})
    outcomes = await post_and_collect(bystander, 10, "b")

    assert set(outcomes.values()) == {"ack"}
    # The poster's socket is closed when its post finds no room; the others at the reconcile.
    assert await doomed.receive_output(timeout=3) == {
        "type": "websocket.close",
        "code": protocol.CLOSE_ROOM_GONE,
    }
    await receive(listener)  # "first"
    await fanout.hubs.get().reconcile()
    assert await listener.receive_output(timeout=3) == {
        "type": "websocket.close",
        "code": protocol.CLOSE_ROOM_GONE,
    }
    # Reconnecting starts the room afresh.
    again = await connect("doomed", query="sync=1")
    assert (await receive(again))["type"] == "synced"
    await again.send_json_to({"message": "new life", "client_id": "n0"})
    assert (await receive(again))["seq"] == 1


# --- 2. the writer task can die ----------------------------------------------------------


class RaisingPoster(RecordingPoster):
    """A poster whose socket is gone: hearing the outcome raises."""

    def post_settled(self, outcome: Outcome, *, client_id: str | None) -> None:
        super().post_settled(outcome, client_id=client_id)
        raise ConnectionResetError("the socket went away")


@pytest.mark.usefixtures("layer")
async def test_a_poster_that_fails_stops_neither_the_others_acks_nor_the_publish() -> None:
    hub = fanout.hubs.get()
    member = RecordingMember()
    await hub.join(member, room_name="shared")
    writer = writers.get()
    bad, good = RaisingPoster(), RecordingPoster()
    bad.expected, good.expected = 5, 5
    for n in range(10):
        poster = bad if n % 2 == 0 else good
        writer.submit("shared", new_post("shared", f"p{n}"), poster)
    await asyncio.wait_for(good.settled.wait(), timeout=5)
    await asyncio.wait_for(member.has(10), timeout=5)
    assert member.seqs == list(range(1, 11))
    assert all(isinstance(o, services.Stored) for o in good.outcomes.values())
    # The writer is still the same, live task.
    assert writer.task is not None
    assert not writer.task.done()


@pytest.mark.usefixtures("layer")
async def test_a_writer_task_that_ended_is_restarted_without_a_second_publisher() -> None:
    writer = writers.get()
    poster = RecordingPoster()
    poster.expected = 1
    writer.submit("r", new_post("r", "first"), poster)
    await asyncio.wait_for(poster.settled.wait(), timeout=5)
    publisher = writer.publisher
    assert writer.task is not None
    writer.task.cancel()  # however it ended
    await asyncio.gather(writer.task, return_exceptions=True)

    poster.settled.clear()
    poster.expected = 2
    writer.submit("r", new_post("r", "second"), poster)
    await asyncio.wait_for(poster.settled.wait(), timeout=5)
    assert isinstance(poster.outcomes["second"], services.Stored)
    assert writer.publisher is publisher


async def test_in_flight_counts_fall_back_to_zero_whatever_the_outcome(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = await connect("counted")
    (consumer,) = fanout.hubs.get().rooms["counted"].members
    assert isinstance(consumer, consumers.ChatConsumer)
    outcomes = await post_and_collect(sender, consumers.MAX_IN_FLIGHT + 20, "x")
    assert set(outcomes.values()) == {"ack"}

    def database_down(posts: list[Any]) -> list[Any]:
        raise OperationalError("database is down")

    monkeypatch.setattr(services, "messages_create", database_down)
    outcomes = await post_and_collect(sender, consumers.MAX_IN_FLIGHT + 20, "y")
    assert set(outcomes.values()) == {"not_stored"}
    assert consumer.in_flight == 0


# --- 3. replies outside flow control ----------------------------------------------------------


async def test_a_history_page_is_cut_to_fit_the_frame_limit(connect: Connect) -> None:
    await database_sync_to_async(store_long_messages)("long", 50)
    reader = await connect("long", query="sync=1")
    await frames_until(reader, lambda f: f["type"] == "synced")
    seen: list[int] = []
    before = 51
    while before > 1:
        await reader.send_json_to({"type": "history", "before": before, "limit": 50})
        output = await reader.receive_output(timeout=3)
        assert len(output["text"].encode()) <= MAX_FRAME_BYTES
        page = [m["seq"] for m in json.loads(output["text"])["messages"]]
        assert page, "a page always holds at least one message"
        assert page == list(range(page[0], before))  # the newest end of what was asked
        seen = page + seen
        before = page[0]
    assert seen == list(range(1, 51))


def store_long_messages(room: str, count: int) -> None:
    room_id = services.room_get_or_create(name=room).pk
    for _ in range(count):
        # 4,000 characters of 3 bytes each: 12 KB a message, 600 KB for 50.
        services.message_create(
            room_id=room_id, author=None, author_name="x", body="€" * 4000, client_id=None
        )


async def test_a_socket_that_never_reads_is_closed_at_the_limit() -> None:
    sent: list[dict[str, Any]] = []
    never = asyncio.Event()

    async def stuck_send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "websocket.send":
            await never.wait()  # the reader never takes anything

    socket = AsgiSocket(stuck_send, limit=10_000)
    for _ in range(100):
        socket.send_text("x" * 500)
    assert socket.buffered() == 0  # dropped, not kept
    assert socket.closed
    await asyncio.sleep(0)
    assert {"type": "websocket.close", "code": CLOSE_SLOW_READER} in sent
    socket.send([OutFrame(1, "late")])
    assert socket.buffered() == 0


# --- 4. a crashed consumer stays in its room forever ---------------------------------------


async def test_json_nested_thousands_deep_is_bad_json(connect: Connect) -> None:
    sender = await connect("deep")
    await sender.send_to(text_data="[" * 3000 + "]" * 3000)
    await sender.send_to(text_data='{"a":' * 3000 + "1" + "}" * 3000)
    assert [(await receive(sender))["code"] for _ in range(2)] == ["bad_json", "bad_json"]
    await sender.send_json_to({"message": "still here", "client_id": "s"})
    assert (await receive(sender))["type"] == "ack"


async def test_a_handler_that_raises_closes_only_that_socket_and_it_leaves_the_room(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = await connect("crashy")
    bystander = await connect("crashy")

    async def broken(self: consumers.ChatConsumer, request: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(consumers.ChatConsumer, "history", broken)
    await victim.send_json_to({"type": "history", "before": 5})
    assert await victim.receive_output(timeout=3) == {
        "type": "websocket.close",
        "code": protocol.CLOSE_SERVER_ERROR,
    }
    await victim.wait()
    assert len(fanout.hubs.get().rooms["crashy"].members) == 1
    await bystander.send_json_to({"message": "fine", "client_id": "f"})
    assert (await receive(bystander))["type"] == "ack"


async def test_a_handshake_that_fails_after_joining_leaves_the_room(
    monkeypatch: pytest.MonkeyPatch, layer: str
) -> None:
    def broken(**kwargs: Any) -> list[Any]:
        raise RuntimeError("a bug")

    await database_sync_to_async(store_long_messages)("joined", 1)
    monkeypatch.setattr(selectors, "rows_before", broken)
    communicator = WebsocketCommunicator(application, "/ws/chat/joined/", headers=[ORIGIN])
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_output(timeout=3) == {
        "type": "websocket.close",
        "code": protocol.CLOSE_SERVER_ERROR,
    }
    await communicator.wait()
    assert not fanout.hubs.get().rooms["joined"].members


async def test_oversized_frames_close_with_4009_and_leave_the_room(connect: Connect) -> None:
    big = await connect("big")
    await big.send_to(text_data="x" * (MAX_FRAME_BYTES + 1))
    assert await big.receive_output(timeout=3) == {
        "type": "websocket.close",
        "code": protocol.CLOSE_TOO_BIG,
    }
    await big.send_input({"type": "websocket.disconnect", "code": protocol.CLOSE_TOO_BIG})
    await big.wait()
    assert not fanout.hubs.get().rooms["big"].members


# --- 6. unbounded rows ---------------------------------------------------------------------


async def test_a_handshake_to_a_new_name_stores_nothing_until_a_message(connect: Connect) -> None:
    for n in range(20):
        await connect(f"scan-{n}", query="sync=1")
    assert await database_sync_to_async(Room.objects.count)() == 0
    poster = await connect("scan-0")
    await poster.send_json_to({"message": "now it exists", "client_id": "c"})
    assert (await receive(poster))["type"] == "ack"
    names = await database_sync_to_async(lambda: list(Room.objects.values_list("name")))()
    assert names == [("scan-0",)]


class RecordingMember:
    """A hub member that keeps the sequence numbers it is handed."""

    def __init__(self) -> None:
        self.direct: DirectSocket | None = None
        self.seqs: list[int] = []
        self.changed = asyncio.Event()

    def deliver(self, frames: list[OutFrame], payload: bytes | None, changes: bool) -> None:
        self.seqs.extend(frame.seq for frame in frames)
        self.changed.set()

    def room_gone(self) -> None:
        self.seqs.append(-1)

    user_id: int | None = None

    async def recheck_access(self) -> None:
        return None

    def typing(self, name: str, *, sender: str) -> None:
        return None

    async def has(self, count: int) -> None:
        while len(self.seqs) < count:
            self.changed.clear()
            await self.changed.wait()


async def test_page_views_store_no_session_and_the_socket_uses_the_pages_guest_name(
    connect: Connect,
) -> None:
    client = AsyncClient()
    for _ in range(5):  # a scanner that never keeps cookies
        response = await AsyncClient().get("/chat/lobby/")
        assert response.status_code == 200
    response = await client.get("/chat/lobby/")
    assert await database_sync_to_async(Session.objects.count)() == 0
    name = response.context["display_name"]
    assert name.startswith("guest-")
    # The same browser keeps its name, and its socket posts under it.
    assert (await client.get("/chat/lobby/")).context["display_name"] == name
    cookie = f"{GUEST_COOKIE}={client.cookies[GUEST_COOKIE].value}".encode()
    socket = await connect("lobby", headers=[ORIGIN, (b"cookie", cookie)])
    await socket.send_json_to({"message": "it is me", "client_id": "me"})
    frames = await frames_until(socket, lambda f: f["type"] == "message")
    assert frames[-1]["author"] == name


async def test_a_forged_guest_cookie_is_a_fresh_guest(connect: Connect) -> None:
    socket = await connect("lobby", headers=[ORIGIN, (b"cookie", b"chat_guest=admin")])
    await socket.send_json_to({"message": "who am I", "client_id": "w"})
    frames = await frames_until(socket, lambda f: f["type"] == "message")
    assert frames[-1]["author"].startswith("guest-")
