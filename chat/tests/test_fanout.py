"""The per-process hub: subscriptions under concurrency, and the reconcile as the only backstop."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat import fanout, services
from chat.events import batch_event
from chat.rooms import group_name
from chat.testing.ws import Connect, receive
from chat.transport import DirectSocket, OutFrame

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def no_reconcile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages must arrive through the channel layer: the database backstop never runs."""
    monkeypatch.setattr(fanout, "RECONCILE_INTERVAL", 3600)


class FakeMember:
    """A member that records what the hub hands it."""

    def __init__(self) -> None:
        self.direct: DirectSocket | None = None
        self.seqs: list[int] = []
        self.got = asyncio.Event()

    def deliver(self, frames: list[OutFrame], payload: bytes | None, changes: bool) -> None:
        self.seqs.extend(frame.seq for frame in frames)
        self.got.set()

    def room_gone(self) -> None:
        raise AssertionError("no room is deleted here")

    user_id: int | None = None

    async def recheck_access(self) -> None:
        return None

    def typing(self, name: str, *, sender: str) -> None:
        raise AssertionError("nobody types here")


@pytest.mark.usefixtures("no_reconcile")
async def test_rooms_first_joined_at_the_same_moment_share_one_hub_channel(layer: str) -> None:
    # Each first join starts the hub; they once raced into two hub channels, and the rooms
    # subscribed on the first one never heard anything again.
    hub = fanout.hubs.get()
    members = [FakeMember() for _ in range(8)]
    await asyncio.gather(*(hub.join(m, room_name=f"room-{n}") for n, m in enumerate(members)))
    for n in range(len(members)):
        event = batch_event(f"room-{n}", n, [(1, "{}")])
        await get_channel_layer().group_send(group_name(f"room-{n}"), event)
    for member in members:
        await asyncio.wait_for(member.got.wait(), timeout=3)
        assert member.seqs == [1]


@pytest.mark.usefixtures("no_reconcile")
async def test_rooms_first_joined_at_the_same_moment_all_get_live_messages(
    connect: Connect,
) -> None:
    sockets = await asyncio.gather(*(connect(f"room-{n}") for n in range(8)))
    for n, communicator in enumerate(sockets):
        await communicator.send_json_to({"message": f"hello {n}"})
    for n, communicator in enumerate(sockets):
        assert (await receive(communicator))["message"] == f"hello {n}"


@pytest.mark.usefixtures("no_reconcile")
async def test_one_room_joined_concurrently_is_subscribed_once(connect: Connect) -> None:
    sockets = await asyncio.gather(*(connect("crowded") for _ in range(10)))
    await sockets[0].send_json_to({"message": "once"})
    for communicator in sockets:
        assert (await receive(communicator))["seq"] == 1
    # Anything more from the first post (a copy through a second subscription, say) would
    # reach a socket before the next post does.
    await sockets[0].send_json_to({"message": "next"})
    for communicator in sockets:
        frame = await receive(communicator)
        assert (frame["seq"], frame["message"]) == (2, "next")


async def test_a_room_left_and_rejoined_keeps_working(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "IDLE_ROOM_LINGER", 0)
    first = await connect("revolving")
    await first.disconnect()
    # The reconcile tick unsubscribes the empty room, while someone joins it again.
    hub = fanout.hubs.get()
    unsubscribing = asyncio.create_task(hub.reconcile())
    again = await connect("revolving")
    await unsubscribing
    await again.send_json_to({"message": "still live"})
    assert (await receive(again))["message"] == "still live"


@pytest.mark.usefixtures("no_reconcile")
async def test_a_socket_handed_a_gap_catches_up_from_the_database(connect: Connect) -> None:
    await database_sync_to_async(store_messages)("gap", 1)
    socket = await connect("gap")
    assert (await receive(socket))["seq"] == 1
    room = fanout.hubs.get().rooms["gap"]
    (member,) = room.members
    await database_sync_to_async(store_messages)("gap", 4)
    # As if the hub skipped 2–4 (it should never): the socket reads them from the database.
    member.deliver([OutFrame(5, '{"type":"message","seq":5}')], None, False)
    assert [(await receive(socket))["seq"] for _ in range(4)] == [2, 3, 4, 5]


def store_messages(room: str, count: int) -> None:
    room_id = services.room_get_or_create(name=room).pk
    for n in range(count):
        services.message_create(
            room_id=room_id, author=None, author_name="x", body=f"m{n}", client_id=None
        )
