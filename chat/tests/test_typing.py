"""Typing notices: to everyone else in the room, never to the typist, never stored, paced."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async

from chat import protocol
from chat.models import Message
from chat.testing.ws import Connect, next_of_type, receive

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_the_others_in_the_room_hear_it_and_the_typist_does_not(connect: Connect) -> None:
    typist = await connect("lobby", query="sync=1")
    listener = await connect("lobby", query="sync=1")
    elsewhere = await connect("other", query="sync=1")
    for communicator in (typist, listener, elsewhere):
        assert (await receive(communicator))["type"] == "synced"

    await typist.send_json_to({"type": "typing"})
    frame = await receive(listener)
    assert frame["type"] == "typing"
    assert frame["name"].startswith("guest-")
    # The typist and the other room get nothing from it: the next frame each receives is a
    # marker posted after the notice.
    await typist.send_json_to({"message": "marker", "client_id": "m"})
    assert (await receive(typist))["type"] == "ack"
    await elsewhere.send_json_to({"message": "marker", "client_id": "e"})
    assert (await receive(elsewhere))["type"] == "ack"
    assert await database_sync_to_async(Message.objects.filter(body="marker").count)() == 2
    assert await database_sync_to_async(Message.objects.count)() == 2  # nothing else stored


async def test_typing_faster_than_the_pace_is_refused_to_the_typist_alone(connect: Connect) -> None:
    typist = await connect("lobby", query="sync=1")
    listener = await connect("lobby", query="sync=1")
    for communicator in (typist, listener):
        await receive(communicator)
    for _ in range(3):
        await typist.send_json_to({"type": "typing"})
    errors = [await next_of_type(typist, "error") for _ in range(2)]
    assert {e["code"] for e in errors} == {"rate_limited"}
    assert all(0 < e["retry_after"] <= protocol.TYPING_INTERVAL for e in errors)
    # The listener heard one notice, then the marker.
    await typist.send_json_to({"message": "marker"})
    assert (await receive(listener))["type"] == "typing"
    assert (await receive(listener))["message"] == "marker"


async def test_a_typing_flood_closes_the_socket(connect: Connect) -> None:
    typist = await connect("lobby")
    for _ in range(30):
        await typist.send_json_to({"type": "typing"})
    while True:
        output = await typist.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            assert output["code"] == protocol.CLOSE_RATE_LIMITED
            return


@pytest.mark.parametrize(
    "frame",
    [{"type": "typing", "name": "admin"}, {"type": "typing", "author": "x"}],
)
async def test_a_typing_frame_cannot_name_anyone(connect: Connect, frame: dict[str, Any]) -> None:
    typist = await connect("lobby")
    listener = await connect("lobby")
    await typist.send_json_to(frame)
    error = await receive(typist)
    assert (error["type"], error["code"]) == ("error", "bad_frame")
    await typist.send_json_to({"message": "marker"})
    assert (await receive(listener))["message"] == "marker"


@pytest.mark.parametrize("field", ["author", "name", "user"])
async def test_a_post_cannot_name_its_author(connect: Connect, field: str) -> None:
    poster = await connect("lobby")
    await poster.send_json_to({"message": "hi", field: "admin"})
    error = await receive(poster)
    assert (error["type"], error["code"]) == ("error", "bad_frame")
    assert await database_sync_to_async(Message.objects.count)() == 0


async def test_the_tutorials_client_is_sent_only_message_frames(connect: Connect) -> None:
    tutorial = await connect("lobby")  # no ?sync=1 nor ?after=: the tutorial's own client
    typist = await connect("lobby", query="sync=1")
    await receive(typist)  # synced
    await typist.send_json_to({"type": "typing"})
    await typist.send_json_to({"message": "marker"})
    # Someone joined and someone typed; the tutorial's page is sent the message, nothing else.
    frame = await receive(tutorial, presence=True)
    assert (frame["type"], frame["message"]) == ("message", "marker")
