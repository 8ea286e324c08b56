"""Edits and deletes: numbered like posts, so every client learns of them once, in order, live
or on resume; only the author (or a moderator) may make them; a deleted post's text is gone."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient

from chat import services
from chat.models import Message, Room
from chat.people import GUEST_COOKIE
from chat.testing.ws import ORIGIN, Connect, next_of_type, receive
from chat.tests.test_access_socket import signed_in

pytestmark = [pytest.mark.django_db(transaction=True)]


async def posted(communicator: WebsocketCommunicator, text: str, client_id: str) -> int:
    """Post `text` and return its seq (from the ack)."""
    await communicator.send_json_to({"message": text, "client_id": client_id})
    ack = await next_of_type(communicator, "ack")
    assert ack["client_id"] == client_id
    return int(ack["seq"])


async def synced(communicator: WebsocketCommunicator) -> dict[str, Any]:
    return await next_of_type(communicator, "synced")


async def guest_headers() -> list[tuple[bytes, bytes]]:
    """The headers of a browser that was given a guest name by a room page."""
    client = AsyncClient()
    response = await client.get("/chat/lobby/")
    assert response.status_code == 200
    return [ORIGIN, (b"cookie", f"{GUEST_COOKIE}={client.cookies[GUEST_COOKIE].value}".encode())]


async def moderator_headers(username: str) -> list[tuple[bytes, bytes]]:
    user, headers = await signed_in(username)

    def grant() -> None:
        user.user_permissions.add(Permission.objects.get(codename="moderate"))

    await database_sync_to_async(grant)()
    return headers


async def test_an_edit_reaches_everyone_live_and_changes_the_post(connect: Connect) -> None:
    _, ada = await signed_in("ada")
    author = await connect("lobby", headers=ada, query="sync=1")
    reader = await connect("lobby", query="sync=1")
    tutorial = await connect("lobby")
    await synced(author)
    await synced(reader)
    seq = await posted(author, "helo", "p1")
    assert (await next_of_type(reader, "message"))["message"] == "helo"
    assert (await receive(tutorial))["message"] == "helo"

    await author.send_json_to({"type": "edit", "seq": seq, "message": "hello", "client_id": "e1"})
    ack = await next_of_type(author, "ack")
    assert ack == {"type": "ack", "client_id": "e1", "seq": seq + 1}
    for communicator in (author, reader):
        edit = await next_of_type(communicator, "edit")
        assert edit["seq"] == seq + 1
        assert edit["target"] == seq
        assert edit["message"] == "hello"
        assert edit["author"] == "ada"
        assert "guest" not in edit
    # The tutorial's client is never sent the edit: its next frame is the next post.
    await author.send_json_to({"message": "after"})
    assert (await receive(tutorial))["message"] == "after"
    # A newcomer's history shows the post as it is now, marked edited.
    newcomer = await connect("lobby", query="sync=1")
    first = await receive(newcomer)
    assert first["seq"] == seq
    assert first["message"] == "hello"
    assert "edited" in first


async def test_a_tutorial_client_is_sent_posts_only(connect: Connect) -> None:
    author = await connect("lobby", query="sync=1")
    tutorial = await connect("lobby")
    await synced(author)
    seq = await posted(author, "one", "p1")
    await author.send_json_to({"type": "edit", "seq": seq, "message": "uno"})
    await author.send_json_to({"type": "delete", "seq": seq})
    await author.send_json_to({"message": "two"})
    frames = [await receive(tutorial), await receive(tutorial)]
    assert [(f["type"], f["message"]) for f in frames] == [("message", "one"), ("message", "two")]
    # Its history on join leaves the deleted post out altogether.
    late = await connect("lobby")
    assert (await receive(late))["message"] == "two"
    await author.send_json_to({"message": "three"})
    assert (await receive(late))["message"] == "three"


async def test_a_delete_removes_the_text_everywhere(connect: Connect) -> None:
    author = await connect("lobby", query="sync=1")
    reader = await connect("lobby", query="sync=1")
    await synced(author)
    await synced(reader)
    seq = await posted(author, "secret", "p1")
    await author.send_json_to({"type": "edit", "seq": seq, "message": "more secret"})
    await author.send_json_to({"type": "delete", "seq": seq, "client_id": "d1"})
    ack = await next_of_type(author, "ack")
    assert ack["client_id"] == "d1"
    delete = await next_of_type(reader, "delete")
    assert delete["target"] == seq
    assert delete["seq"] == ack["seq"] == seq + 2
    assert "message" not in delete

    # Neither the post nor its edit holds the words any more; a new client and a history
    # page see a tombstone.
    bodies = await database_sync_to_async(
        lambda: list(Message.objects.order_by("seq").values_list("body", flat=True))
    )()
    assert bodies == ["", "", ""]
    newcomer = await connect("lobby", query="sync=1")
    tombstone = await receive(newcomer)
    assert tombstone == tombstone | {"seq": seq, "message": "", "deleted": True}
    await newcomer.send_json_to({"type": "history", "before": seq + 3})
    page = await next_of_type(newcomer, "history")
    assert [m["seq"] for m in page["messages"]] == [seq]
    assert page["messages"][0]["message"] == ""
    # Resuming from before the post: the post as a tombstone, then both changes, in order.
    resumer = await connect("lobby", query=f"after={seq - 1}")
    frames = [await receive(resumer) for _ in range(4)]
    assert [f["type"] for f in frames] == ["message", "edit", "delete", "synced"]
    assert [f.get("message") for f in frames[:2]] == ["", ""]
    assert frames[3]["last_seq"] == seq + 2


async def test_a_client_that_was_away_learns_of_every_change_in_order(connect: Connect) -> None:
    _, ada = await signed_in("ada")
    author = await connect("lobby", headers=ada, query="sync=1")
    await synced(author)
    first = await posted(author, "first", "p1")
    second = await posted(author, "second", "p2")
    away = await connect("lobby", query="sync=1")
    # Under Redis the posts may reach this process's hub after the join: then they come live,
    # after `synced`. Either way the client holds both.
    held: set[int] = set()
    while second not in held:
        frame = await receive(away)
        held.add(frame.get("seq", frame.get("last_seq", 0)))
    position = second
    await away.disconnect()

    await author.send_json_to({"type": "edit", "seq": first, "message": "first!"})
    await author.send_json_to({"type": "delete", "seq": second})
    third = await posted(author, "third", "p3")

    back = await connect("lobby", query=f"after={position}")
    # In catch-up before `synced`, or live after it if this process's hub had not yet heard
    # of them through Redis when the socket joined: either way once each, in order.
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1].get("seq") != third:
        frame = await receive(back)
        if frame["type"] != "synced":
            frames.append(frame)
    assert [(f["type"], f.get("target")) for f in frames] == [
        ("edit", first),
        ("delete", second),
        ("message", None),
    ]
    assert frames[0]["message"] == "first!"
    assert [f["seq"] for f in frames] == [third - 2, third - 1, third]


async def test_only_the_author_may_change_a_post(connect: Connect) -> None:
    _, ada = await signed_in("ada")
    _, eve = await signed_in("eve")
    author = await connect("lobby", headers=ada, query="sync=1")
    other = await connect("lobby", headers=eve, query="sync=1")
    await synced(author)
    await synced(other)
    seq = await posted(author, "mine", "p1")
    for frame in (
        {"type": "edit", "seq": seq, "message": "yours now", "client_id": "x1"},
        {"type": "delete", "seq": seq, "client_id": "x2"},
    ):
        await other.send_json_to(frame)
        error = await next_of_type(other, "error")
        assert error["code"] == "forbidden"
        assert error["client_id"] == frame["client_id"]
    # Nothing was stored or numbered: the author's next post is the next seq, and the text stands.
    assert await posted(author, "still mine", "p2") == seq + 1
    assert await database_sync_to_async(Message.objects.count)() == 2
    assert (await database_sync_to_async(Message.objects.get)(seq=seq)).body == "mine"


async def test_a_moderator_may_change_anyones_post(connect: Connect) -> None:
    author = await connect("lobby", query="sync=1")
    mod = await connect("lobby", headers=await moderator_headers("mo"), query="sync=1")
    await synced(author)
    await synced(mod)
    seq = await posted(author, "spam", "p1")
    await mod.send_json_to({"type": "edit", "seq": seq, "message": "[removed link]"})
    edit = await next_of_type(author, "edit")
    assert (edit["author"], edit["message"]) == ("mo", "[removed link]")
    await mod.send_json_to({"type": "delete", "seq": seq})
    assert (await next_of_type(author, "delete"))["target"] == seq


async def test_a_guest_may_change_their_own_posts_from_another_socket(connect: Connect) -> None:
    me = await guest_headers()
    first = await connect("lobby", headers=me, query="sync=1")
    await synced(first)
    seq = await posted(first, "typo", "p1")
    await first.disconnect()
    again = await connect("lobby", headers=me, query="sync=1")
    stranger = await connect("lobby", headers=await guest_headers(), query="sync=1")
    await synced(again)
    await synced(stranger)
    await stranger.send_json_to({"type": "delete", "seq": seq})
    assert (await next_of_type(stranger, "error"))["code"] == "forbidden"
    await again.send_json_to({"type": "edit", "seq": seq, "message": "fixed"})
    edit = await next_of_type(stranger, "edit")
    assert edit["message"] == "fixed"
    assert edit["guest"] is True


async def test_changes_to_what_is_not_a_post_of_this_room_are_not_found(connect: Connect) -> None:
    elsewhere = await connect("other", query="sync=1")
    await synced(elsewhere)
    for n in range(3):
        await posted(elsewhere, f"o{n}", f"o{n}")
    here = await connect("lobby", query="sync=1")
    await synced(here)
    seq = await posted(here, "here", "h1")
    await here.send_json_to({"type": "edit", "seq": seq, "message": "edited"})
    await next_of_type(here, "edit")
    # Seq 3 exists in "other" only, seq 2 is an edit, not a post; a deleted post is gone.
    await here.send_json_to({"type": "delete", "seq": seq})
    await next_of_type(here, "delete")
    for frame in (
        {"type": "delete", "seq": 3, "client_id": "c1"},
        {"type": "edit", "seq": 2, "message": "x", "client_id": "c2"},
        {"type": "edit", "seq": seq, "message": "back", "client_id": "c3"},
        {"type": "delete", "seq": seq, "client_id": "c4"},
        {"type": "delete", "seq": 10**12, "client_id": "c5"},
    ):
        await here.send_json_to(frame)
        error = await next_of_type(here, "error")
        assert (error["code"], error["client_id"]) == ("not_found", frame["client_id"])
    assert await database_sync_to_async(Message.objects.filter(body__startswith="o").count)() == 3


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "edit", "seq": 1, "message": "x", "author": "admin"}, "bad_frame"),
        ({"type": "delete", "seq": 1, "user": "admin"}, "bad_frame"),
        ({"type": "edit", "seq": "1", "message": "x"}, "bad_frame"),
        ({"type": "edit", "seq": 0, "message": "x"}, "bad_frame"),
        ({"type": "delete", "seq": True}, "bad_frame"),
        ({"type": "delete", "seq": 1.0}, "bad_frame"),
        ({"type": "delete"}, "bad_frame"),
        ({"type": "edit", "seq": 1}, "empty_message"),
        ({"type": "edit", "seq": 1, "message": "  "}, "empty_message"),
        ({"type": "edit", "seq": 1, "message": "x" * 4001}, "message_too_long"),
        ({"type": "edit", "seq": 1, "message": "\ud800"}, "bad_frame"),
        ({"type": "edit", "seq": 1, "message": "a\x00b"}, "bad_frame"),
    ],
)
async def test_a_malformed_change_is_refused_to_its_sender_alone(
    connect: Connect, frame: dict[str, Any], code: str
) -> None:
    author = await connect("lobby", query="sync=1")
    reader = await connect("lobby", query="sync=1")
    await synced(author)
    await synced(reader)
    await posted(author, "original", "p1")
    await next_of_type(reader, "message")
    await author.send_json_to(frame)
    assert (await next_of_type(author, "error"))["code"] == code
    # Everyone's work goes on: the next frame the reader gets is the next post.
    await author.send_json_to({"message": "next"})
    assert (await receive(reader))["message"] == "next"
    assert (await database_sync_to_async(Message.objects.get)(seq=1)).body == "original"


async def test_a_resent_change_is_acknowledged_again_and_stored_once(connect: Connect) -> None:
    author = await connect("lobby", query="sync=1")
    await synced(author)
    seq = await posted(author, "v1", "p1")
    for _ in range(2):
        await author.send_json_to({"type": "edit", "seq": seq, "message": "v2", "client_id": "e"})
        assert (await next_of_type(author, "ack"))["seq"] == seq + 1
    assert await database_sync_to_async(Message.objects.count)() == 2


def test_a_post_and_its_changes_in_one_batch() -> None:
    """The writer may store a post and changes to it in one transaction (a fast client that
    resends after an outage): the changes apply to the post before it is inserted."""
    room = services.room_get_or_create(name="lobby")
    user = User.objects.create_user("ada")

    def change(kind: int, body: str, target: int | None, client_id: str) -> services.NewPost:
        return services.NewPost(
            room_name="lobby",
            room_id=room.pk,
            author=user,
            author_name="ada",
            body=body,
            client_id=client_id,
            kind=kind,
            target_seq=target,
        )

    results = services.messages_create(
        [
            change(Message.Kind.MESSAGE, "a", None, "p1"),
            change(Message.Kind.EDIT, "b", 1, "e1"),
            change(Message.Kind.MESSAGE, "keep", None, "p2"),
            change(Message.Kind.EDIT, "kept edit", 3, "e2"),
            change(Message.Kind.DELETE, "", 1, "d1"),
        ]
    )
    assert [r.message.seq for r in results if isinstance(r, services.Stored)] == [1, 2, 3, 4, 5]
    rows = list(
        Message.objects.order_by("seq").values_list("kind", "target_seq", "body", "deleted")
    )
    assert rows == [
        (Message.Kind.MESSAGE, None, "", True),
        (Message.Kind.EDIT, 1, "", False),
        (Message.Kind.MESSAGE, None, "kept edit", False),
        (Message.Kind.EDIT, 3, "kept edit", False),
        (Message.Kind.DELETE, 1, "", False),
    ]
    assert Room.objects.get(pk=room.pk).last_seq == 5
