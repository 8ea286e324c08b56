"""The rooms directory (chat/directory.py): what it lists, to whom, and its JSON endpoint."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import AnonymousUser, User
from django.test import Client
from django.utils import timezone

from chat.directory import rooms_listing
from chat.models import Message, Room, RoomMember
from chat.presence import presences

NOW = timezone.now().replace(microsecond=123000)


def room_with_messages(name: str, *, last: datetime, private: bool = False, **kw: object) -> Room:
    """A room whose latest of two messages was stored at `last`."""
    room = Room.objects.create(name=name, last_seq=2, private=private, **kw)
    for seq, when in ((1, last - timedelta(minutes=5)), (2, last)):
        Message.objects.create(room=room, seq=seq, author_name="ada", body="hi", created_at=when)
    return room


@pytest.mark.django_db
def test_lists_public_rooms_with_a_message_most_recent_first() -> None:
    room_with_messages("older", last=NOW - timedelta(hours=2))
    room_with_messages("newer", last=NOW)
    Room.objects.create(name="visited-only")  # a name someone opened: nothing to list
    listing = rooms_listing(AnonymousUser())
    assert [room["name"] for room in listing["rooms"]] == ["newer", "older"]
    newest = listing["rooms"][0]
    assert newest == {
        "name": "newer",
        "online": 0,
        "last_message": NOW.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "private": False,
    }
    assert listing["poll_ms"] > 0


@pytest.mark.django_db
def test_private_rooms_are_listed_only_to_those_who_may_enter(
    django_user_model: type[User],
) -> None:
    owner = django_user_model.objects.create_user("owner")
    member = django_user_model.objects.create_user("member")
    stranger = django_user_model.objects.create_user("stranger")
    secret = room_with_messages("secret", last=NOW, private=True, owner=owner)
    RoomMember.objects.create(room=secret, user=member)
    room_with_messages("lobby", last=NOW - timedelta(minutes=1))

    def names(user: User | AnonymousUser) -> list[str]:
        return [room["name"] for room in rooms_listing(user)["rooms"]]

    assert names(AnonymousUser()) == ["lobby"]
    assert names(stranger) == ["lobby"]
    assert names(member) == ["secret", "lobby"]
    assert names(owner) == ["secret", "lobby"]
    assert rooms_listing(owner)["rooms"][0]["private"] is True


@pytest.mark.django_db(transaction=True)
async def test_counts_the_people_in_each_room_once() -> None:
    await sync_to_async(room_with_messages)("busy", last=NOW)
    await sync_to_async(room_with_messages)("quiet", last=NOW - timedelta(minutes=1))
    presence = presences.get()
    # Two tabs of one person, and someone else.
    await presence.enter("busy", "socket-1", "user:1", "ada")
    await presence.enter("busy", "socket-2", "user:1", "ada")
    await presence.enter("busy", "socket-3", "guest:x", "guest-123abc")
    try:
        # As the view runs: in a thread, reading the presence of the server's own loop.
        listing = await sync_to_async(rooms_listing)(AnonymousUser())
    finally:
        presences.pop()
        await presence.close()
    assert {room["name"]: room["online"] for room in listing["rooms"]} == {"busy": 2, "quiet": 0}


@pytest.mark.django_db
def test_the_api_answers_json_that_is_never_cached(client: Client) -> None:
    room_with_messages("lobby", last=NOW)
    response = client.get("/api/rooms/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert [room["name"] for room in response.json()["rooms"]] == ["lobby"]


@pytest.mark.django_db
def test_the_api_wants_a_sign_in_when_accounts_are_mandatory(client: Client, settings: Any) -> None:
    settings.CHAT_REQUIRE_LOGIN = True
    assert client.get("/api/rooms/").status_code == 401


@pytest.mark.django_db
def test_the_index_page_comes_with_the_listing(client: Client) -> None:
    room_with_messages("lobby", last=NOW)
    html = client.get("/chat/").content.decode()
    data = html.split('<script id="rooms-data" type="application/json">')[1].split("</script>")[0]
    assert [room["name"] for room in json.loads(data)["rooms"]] == ["lobby"]
    assert "chat/directory.js" in html


@pytest.mark.django_db
def test_the_api_is_not_a_room(client: Client) -> None:
    """A room called "api" is still a room: the endpoint is not under /chat/."""
    assert client.get("/chat/api/").status_code == 200
