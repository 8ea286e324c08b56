"""Private rooms and bans: who may enter (chat/access.py), the pages, the admin, the revoke."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import AnonymousUser, Group, Permission, User
from django.test import Client, override_settings
from django.utils import timezone

from chat import access
from chat.access import (
    CONTROL_GROUP,
    Revoke,
    is_banned,
    is_moderator,
    may_enter,
    on_access_revoked,
    read_revoke,
    revoke_event,
    visible_rooms,
)
from chat.models import Ban, Room, RoomMember
from mysite.settings import channel_layers_config

pytestmark = pytest.mark.django_db

Capture = Callable[..., Any]


@pytest.fixture
def people(django_user_model: type[User]) -> dict[str, User]:
    """An owner, a member, someone else, a moderator (by group) and a superuser.

    No passwords (tests sign in with force_login): hashing one costs half a second.
    """
    made = {
        name: django_user_model.objects.create_user(name)
        for name in ("owner", "member", "other", "moderator")
    }
    made["moderator"].is_staff = True
    made["moderator"].save()
    made["moderator"].groups.add(Group.objects.get(name="Moderators"))
    made["root"] = django_user_model.objects.create_superuser("root")
    return made


@pytest.fixture
def rooms(people: dict[str, User]) -> dict[str, Room]:
    """ "lobby" (public), "secret" (private: owner, with member) and "hideout" (other's)."""
    secret = Room.objects.create(name="secret", private=True, owner=people["owner"])
    RoomMember.objects.create(room=secret, user=people["member"], added_by=people["owner"])
    return {
        "lobby": Room.objects.create(name="lobby"),
        "secret": secret,
        "hideout": Room.objects.create(name="hideout", private=True, owner=people["other"]),
    }


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def control() -> Iterator[Callable[[], dict[str, Any]]]:
    """The next event published to the control group, on the in-memory channel layer."""
    with override_settings(CHANNEL_LAYERS=channel_layers_config(None)):
        layer = get_channel_layer()
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(CONTROL_GROUP, channel)

        def next_event() -> dict[str, Any]:
            async def receive() -> dict[str, Any]:
                return await asyncio.wait_for(layer.receive(channel), 2)

            return async_to_sync(receive)()

        yield next_event
        async_to_sync(layer.flush)()


def marker(next_event: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Publish a marker and return the first event: the marker itself if nothing came before."""
    on_access_revoked(0, "marker")
    return next_event()


MARKER = {"type": "chat.revoke", "user_id": 0, "room": "marker"}


# --- may_enter ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "room", "reason"),
    [
        ("anonymous", "lobby", None),
        ("other", "lobby", None),
        ("anonymous", "not-created-yet", None),
        ("owner", "secret", None),
        ("member", "secret", None),
        ("moderator", "secret", None),
        ("root", "secret", None),
        ("other", "secret", "private"),
        ("member", "hideout", "private"),
        ("anonymous", "secret", "sign_in"),
    ],
)
def test_who_may_enter_which_room(
    people: dict[str, User], rooms: dict[str, Room], who: str, room: str, reason: str | None
) -> None:
    user = AnonymousUser() if who == "anonymous" else people[who]
    decision = may_enter(user, room)
    assert decision.allowed is (reason is None)
    assert decision.reason == reason


def test_a_guest_with_no_user_at_all_is_anonymous(rooms: dict[str, Room]) -> None:
    assert may_enter(None, "lobby").allowed
    assert may_enter(None, "secret").reason == "sign_in"
    assert not is_banned(None, "lobby")


def test_a_ban_everywhere_keeps_its_person_out_of_every_room(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    Ban.objects.create(user=people["owner"], reason="spam")
    for room in ("lobby", "secret", "not-created-yet"):
        decision = may_enter(people["owner"], room)
        assert decision.reason == "banned"
        assert "every room" in decision.detail
        assert "Reason: spam" in decision.detail
        assert is_banned(people["owner"], room)
    assert may_enter(people["member"], "secret").allowed


def test_a_ban_from_one_room_keeps_its_person_out_of_that_room_only(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    until = timezone.now() + timedelta(days=1)
    Ban.objects.create(user=people["member"], room=rooms["secret"], until=until)
    decision = may_enter(people["member"], "secret")
    assert decision.reason == "banned"
    assert f"until {until:%Y-%m-%d %H:%M} UTC" in decision.detail
    assert may_enter(people["member"], "lobby").allowed
    assert not is_banned(people["member"], "lobby")


def test_an_expired_ban_does_not_count(people: dict[str, User], rooms: dict[str, Room]) -> None:
    Ban.objects.create(user=people["other"], until=timezone.now() - timedelta(seconds=1))
    assert may_enter(people["other"], "lobby").allowed
    assert not is_banned(people["other"], "lobby")


def test_the_longest_ban_in_force_is_the_one_told(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    Ban.objects.create(user=people["other"], until=timezone.now() + timedelta(hours=1))
    Ban.objects.create(user=people["other"], room=rooms["lobby"], reason="for good")
    assert "Reason: for good" in may_enter(people["other"], "lobby").detail


def test_moderators_and_superusers_moderate(people: dict[str, User]) -> None:
    assert is_moderator(people["moderator"])
    assert is_moderator(people["root"])
    assert not is_moderator(people["owner"])
    assert not is_moderator(AnonymousUser())
    assert not is_moderator(None)


# --- pages ----------------------------------------------------------------------------------


def test_a_non_member_gets_the_403_page(people: dict[str, User], rooms: dict[str, Room]) -> None:
    response = signed_in(people["other"]).get("/chat/secret/")
    assert response.status_code == 403
    assert "chat/forbidden.html" in [t.name for t in response.templates]
    html = response.content.decode()
    assert 'data-reason="private"' in html
    assert 'id="chat-message-input"' not in html
    assert 'id="forbidden-sign-in"' not in html


def test_a_visitor_who_is_not_signed_in_is_asked_to(rooms: dict[str, Room]) -> None:
    response = Client().get("/chat/secret/")
    assert response.status_code == 403
    assert 'data-reason="sign_in"' in response.content.decode()
    assert "next=%2Fchat%2Fsecret%2F" in response.content.decode()


def test_a_banned_person_gets_the_403_page_even_in_a_public_room(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    Ban.objects.create(user=people["other"], reason="<b>rude</b>")
    response = signed_in(people["other"]).get("/chat/lobby/")
    assert response.status_code == 403
    html = response.content.decode()
    assert "You are banned from every room" in html
    assert "&lt;b&gt;rude&lt;/b&gt;" in html


def test_members_and_the_owner_get_the_room(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    for who in ("owner", "member", "moderator"):
        response = signed_in(people[who]).get("/chat/secret/")
        assert response.status_code == 200
        assert 'id="chat-message-input"' in response.content.decode()


def test_only_the_owner_sees_the_members_link(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    assert 'id="private-members-link"' in signed_in(people["owner"]).get("/chat/secret/").text
    member_page = signed_in(people["member"]).get("/chat/secret/").text
    assert 'id="private-members-link"' not in member_page
    assert 'id="private-new-link"' in member_page
    assert 'id="private-room-links"' not in Client().get("/chat/lobby/").text


def test_creating_a_private_room(people: dict[str, User], rooms: dict[str, Room]) -> None:
    client = signed_in(people["owner"])
    assert client.get("/chat/private/new/").status_code == 200
    response = client.post("/chat/private/new/", {"name": "plans"})
    assert response.status_code == 302
    assert response["Location"] == "/chat/plans/members/"
    room = Room.objects.get(name="plans")
    assert room.private
    assert room.owner == people["owner"]
    assert Client().get("/chat/plans/").status_code == 403


@pytest.mark.parametrize(
    ("name", "error"), [("lobby", "already exists"), ("a b", "ASCII letters"), ("..", "ASCII")]
)
def test_a_taken_or_invalid_name_is_refused(
    people: dict[str, User], rooms: dict[str, Room], name: str, error: str
) -> None:
    response = signed_in(people["owner"]).post("/chat/private/new/", {"name": name})
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not Room.objects.filter(name=name, private=True).exists()


def test_creating_a_private_room_needs_signing_in() -> None:
    response = Client().post("/chat/private/new/", {"name": "plans"})
    assert response.status_code == 302
    assert "next=/chat/private/new/" in response["Location"]
    assert not Room.objects.filter(name="plans").exists()


def test_the_owner_adds_and_removes_members(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    client = signed_in(people["owner"])
    response = client.post("/chat/secret/members/", {"username": "other"})
    assert response.status_code == 302
    assert may_enter(people["other"], "secret").allowed
    assert (
        RoomMember.objects.get(room=rooms["secret"], user=people["other"]).added_by
        == (people["owner"])
    )
    page = client.get("/chat/secret/members/").content.decode()
    assert page.count('class="member-name"') == 2
    response = client.post("/chat/secret/members/remove/", {"user_id": people["other"].pk})
    assert response.status_code == 302
    assert may_enter(people["other"], "secret").reason == "private"


@pytest.mark.parametrize(("username", "error"), [("nobody", "Nobody"), ("owner", "owns")])
def test_adding_someone_who_cannot_be_added_says_why(
    people: dict[str, User], rooms: dict[str, Room], username: str, error: str
) -> None:
    response = signed_in(people["owner"]).post("/chat/secret/members/", {"username": username})
    assert response.status_code == 400
    assert error in response.content.decode()
    assert RoomMember.objects.filter(room=rooms["secret"]).count() == 1


def test_only_the_owner_manages_members(people: dict[str, User], rooms: dict[str, Room]) -> None:
    for who in ("member", "other"):
        client = signed_in(people[who])
        assert client.get("/chat/secret/members/").status_code == 403
        response = client.post("/chat/secret/members/", {"username": who})
        assert response.status_code == 403
        response = client.post("/chat/secret/members/remove/", {"user_id": people["member"].pk})
        assert response.status_code == 403
    assert RoomMember.objects.filter(room=rooms["secret"]).count() == 1
    # A public room has no members page.
    assert signed_in(people["owner"]).get("/chat/lobby/members/").status_code == 404


# --- the revoke event -----------------------------------------------------------------------


def test_removing_a_member_publishes_a_revoke(
    people: dict[str, User],
    rooms: dict[str, Room],
    control: Callable[[], dict[str, Any]],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    client = signed_in(people["owner"])
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/chat/secret/members/", {"username": "other"})
    assert marker(control) == MARKER  # adding someone revokes nothing
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/chat/secret/members/remove/", {"user_id": people["other"].pk})
    assert control() == {"type": "chat.revoke", "user_id": people["other"].pk, "room": "secret"}


def test_a_ban_made_in_the_admin_publishes_a_revoke_and_records_its_moderator(
    people: dict[str, User],
    rooms: dict[str, Room],
    control: Callable[[], dict[str, Any]],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    form = {"user": people["other"].pk, "room": "", "reason": "spam", "until_0": "", "until_1": ""}
    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in(people["moderator"]).post("/admin/chat/ban/add/", form)
    assert response.status_code == 302
    assert control() == {"type": "chat.revoke", "user_id": people["other"].pk, "room": None}
    ban = Ban.objects.get(user=people["other"])
    assert ban.created_by == people["moderator"]
    assert signed_in(people["other"]).get("/chat/lobby/").status_code == 403


def test_a_ban_from_one_room_names_the_room_and_an_expired_one_revokes_nothing(
    people: dict[str, User],
    rooms: dict[str, Room],
    control: Callable[[], dict[str, Any]],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        Ban.objects.create(user=people["other"], until=timezone.now() - timedelta(hours=1))
    assert marker(control) == MARKER
    with django_capture_on_commit_callbacks(execute=True):
        Ban.objects.create(user=people["other"], room=rooms["lobby"])
    assert control() == {"type": "chat.revoke", "user_id": people["other"].pk, "room": "lobby"}


def test_making_a_room_private_revokes_everyone_in_it_and_a_new_owner_the_old_one(
    people: dict[str, User],
    rooms: dict[str, Room],
    control: Callable[[], dict[str, Any]],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    lobby = rooms["lobby"]
    with django_capture_on_commit_callbacks(execute=True):
        lobby.private = True
        lobby.save()
    assert control() == {"type": "chat.revoke", "user_id": None, "room": "lobby"}
    secret = rooms["secret"]
    with django_capture_on_commit_callbacks(execute=True):
        secret.owner = people["member"]
        secret.save()
    assert control() == {"type": "chat.revoke", "user_id": people["owner"].pk, "room": "secret"}


def test_creating_a_private_room_over_a_name_in_use_revokes_everyone_in_it(
    people: dict[str, User],
    control: Callable[[], dict[str, Any]],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    # Nobody has posted in "plans" yet, but sockets may sit in the name.
    with django_capture_on_commit_callbacks(execute=True):
        signed_in(people["owner"]).post("/chat/private/new/", {"name": "plans"})
    assert control() == {"type": "chat.revoke", "user_id": None, "room": "plans"}


def test_moving_a_membership_in_the_admin_revokes_the_old_one(
    people: dict[str, User],
    rooms: dict[str, Room],
    control: Callable[[], dict[str, Any]],
    django_capture_on_commit_callbacks: Capture,
) -> None:
    membership = RoomMember.objects.get(room=rooms["secret"], user=people["member"])
    with django_capture_on_commit_callbacks(execute=True):
        membership.room = rooms["hideout"]
        membership.save()
    assert control() == {"type": "chat.revoke", "user_id": people["member"].pk, "room": "secret"}


def test_an_unavailable_channel_layer_does_not_fail_the_change(
    people: dict[str, User],
    rooms: dict[str, Room],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Capture,
) -> None:
    class Down:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            raise ConnectionError("redis is down")

    monkeypatch.setattr(access, "get_channel_layer", Down)
    form = {"user": people["other"].pk, "room": "", "until_0": "", "until_1": ""}
    with (
        caplog.at_level(logging.WARNING, logger="chat.access"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = signed_in(people["root"]).post("/admin/chat/ban/add/", form)
    assert response.status_code == 302
    assert Ban.objects.filter(user=people["other"]).exists()
    assert "could not publish" in caplog.text


def test_a_frozen_channel_layer_holds_the_change_up_only_briefly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class Frozen:
        async def group_send(self, group: str, message: dict[str, Any]) -> None:
            await asyncio.sleep(60)

    monkeypatch.setattr(access, "get_channel_layer", Frozen)
    monkeypatch.setattr(access, "PUBLISH_TIMEOUT_S", 0.05)
    with caplog.at_level(logging.WARNING, logger="chat.access"):
        on_access_revoked(1, "lobby")
    assert "could not publish" in caplog.text


def test_the_revoke_event_reads_back_and_refuses_malformed_ones() -> None:
    assert read_revoke(dict(revoke_event(3, None))) == Revoke(3, None)
    assert read_revoke(dict(revoke_event(None, "lobby"))) == Revoke(None, "lobby")
    with pytest.raises(ValueError, match="names a person"):
        revoke_event(None, None)
    for bad in (
        {"type": "chat.batch", "user_id": 3, "room": None},
        {"type": "chat.revoke", "user_id": "3", "room": None},
        {"type": "chat.revoke", "user_id": True, "room": None},
        {"type": "chat.revoke", "user_id": 3, "room": 5},
        {"type": "chat.revoke", "user_id": None, "room": None},
    ):
        assert read_revoke(bad) is None


# --- the admin and the moderators ---------------------------------------------------------


def test_the_moderators_group_exists_after_migrate() -> None:
    group = Group.objects.get(name="Moderators")
    codenames = set(group.permissions.values_list("codename", flat=True))
    assert {"moderate", "add_ban", "change_ban", "delete_ban", "add_roommember"} <= codenames
    assert {"delete_room", "delete_message"}.isdisjoint(codenames)


def test_only_moderators_change_bans_in_the_admin(people: dict[str, User]) -> None:
    clerk = people["other"]
    clerk.is_staff = True
    clerk.save()
    clerk.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_ban", "add_ban", "change_ban"])
    )
    client = signed_in(clerk)
    assert client.get("/admin/chat/ban/").status_code == 200  # may look
    assert client.get("/admin/chat/ban/add/").status_code == 403
    assert signed_in(people["moderator"]).get("/admin/chat/ban/add/").status_code == 200


def test_the_admin_lists_rooms_and_edits_their_members(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    client = signed_in(people["moderator"])
    listing = client.get("/admin/chat/room/").content.decode()
    assert "secret" in listing
    page = client.get(f"/admin/chat/room/{rooms['secret'].pk}/change/").content.decode()
    assert "members-TOTAL_FORMS" in page
    assert client.get("/admin/chat/roommember/").status_code == 200


def test_a_member_added_in_the_admin_records_who_added_them(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    secret = rooms["secret"]
    existing = RoomMember.objects.get(room=secret)
    form = {
        "private": "on",
        "owner": people["owner"].pk,
        "members-TOTAL_FORMS": "2",
        "members-INITIAL_FORMS": "1",
        "members-0-id": existing.pk,
        "members-0-room": secret.pk,
        "members-0-user": people["member"].pk,
        "members-1-room": secret.pk,
        "members-1-user": people["other"].pk,
    }
    response = signed_in(people["moderator"]).post(f"/admin/chat/room/{secret.pk}/change/", form)
    assert response.status_code == 302
    added = RoomMember.objects.get(room=secret, user=people["other"])
    assert added.added_by == people["moderator"]
    assert RoomMember.objects.get(pk=existing.pk).added_by == people["owner"]


# --- the directory's selector -------------------------------------------------------------


def test_visible_rooms_hides_private_rooms_from_non_members(
    people: dict[str, User], rooms: dict[str, Room]
) -> None:
    def names(user: Any) -> set[str]:
        return set(visible_rooms(user).values_list("name", flat=True))

    assert names(AnonymousUser()) == {"lobby"}
    assert names(people["member"]) == {"lobby", "secret"}
    assert names(people["owner"]) == {"lobby", "secret"}
    assert names(people["other"]) == {"lobby", "hideout"}
    assert names(people["moderator"]) == {"lobby", "secret", "hideout"}
