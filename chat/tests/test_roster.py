"""Who is in a room, as its sockets are told: everyone first, then who joined and who left."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from chat.people import GUEST_COOKIE, Person, remember_guest
from chat.testing.ws import ORIGIN, Connect, receive

pytestmark = [pytest.mark.django_db(transaction=True)]


async def next_presence(communicator: WebsocketCommunicator) -> dict[str, Any]:
    while True:
        frame = await receive(communicator, wait=5, presence=True)
        if frame["type"] == "presence":
            return frame


def names(people: list[dict[str, str]]) -> list[str]:
    return [person["name"] for person in people]


def guest_cookie(name: str) -> tuple[bytes, bytes]:
    """The cookie header a browser holding guest `name` sends."""
    from django.http import HttpRequest, HttpResponse

    response = HttpResponse()
    person = Person(user=None, name=name, guest_id=name, new_guest=True)
    remember_guest(response, HttpRequest(), person)
    return (b"cookie", f"{GUEST_COOKIE}={response.cookies[GUEST_COOKIE].value}".encode())


async def test_a_newcomer_is_told_everyone_and_the_others_who_came_and_went(
    connect: Connect,
) -> None:
    alice = await connect("lobby", headers=[ORIGIN, guest_cookie("guest-a11ce0")], query="sync=1")
    assert names((await next_presence(alice))["people"]) == ["guest-a11ce0"]

    bob = await connect("lobby", headers=[ORIGIN, guest_cookie("guest-b0b000")], query="sync=1")
    assert names((await next_presence(bob))["people"]) == ["guest-a11ce0", "guest-b0b000"]
    change = await next_presence(alice)
    assert (names(change["joined"]), names(change["left"])) == (["guest-b0b000"], [])

    await bob.disconnect()
    change = await next_presence(alice)
    assert (names(change["joined"]), names(change["left"])) == ([], ["guest-b0b000"])


async def test_two_tabs_of_one_person_count_once(connect: Connect) -> None:
    watcher = await connect("lobby", headers=[ORIGIN, guest_cookie("guest-0b5e7e")], query="sync=1")
    await next_presence(watcher)
    tabs = [
        await connect("lobby", headers=[ORIGIN, guest_cookie("guest-7ab5ab")], query="sync=1")
        for _ in "ab"
    ]
    everyone = await next_presence(tabs[1])
    assert names(everyone["people"]) == ["guest-0b5e7e", "guest-7ab5ab"]
    change = await next_presence(watcher)
    assert names(change["joined"]) == ["guest-7ab5ab"]
    # One tab closes: still there. The other closes: gone. The watcher hears only the second.
    await tabs[0].disconnect()
    await tabs[1].disconnect()
    change = await next_presence(watcher)
    assert (names(change["joined"]), names(change["left"])) == ([], ["guest-7ab5ab"])


async def test_other_rooms_are_not_told(connect: Connect) -> None:
    here = await connect("here", query="sync=1")
    await next_presence(here)
    await connect("there")
    # The next thing `here` hears is its own post's ack, not a presence change.
    await here.send_json_to({"message": "marker", "client_id": "m"})
    frame = await receive(here, presence=True)
    assert frame["type"] == "ack"
