"""Private rooms and bans at the socket: refused at the handshake, closed at once on removal."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import AsyncClient

from chat import protocol
from chat.models import Ban
from chat.private_rooms import member_add, member_remove, private_room_create
from chat.testing.ws import ORIGIN, Connect, receive

pytestmark = [pytest.mark.django_db(transaction=True)]


async def signed_in(username: str) -> tuple[User, list[tuple[bytes, bytes]]]:
    """A user, and the headers of a browser signed in as them."""
    user = await database_sync_to_async(User.objects.create_user)(username, password="x" * 12)
    client = AsyncClient()
    await client.aforce_login(user)
    cookie = "; ".join(f"{key}={morsel.value}" for key, morsel in client.cookies.items())
    return user, [ORIGIN, (b"cookie", cookie.encode())]


async def refused_with(communicator: WebsocketCommunicator, code: int) -> dict[str, Any]:
    """The error frame a refused socket is sent, after checking it is then closed with `code`."""
    error = await receive(communicator)
    assert await communicator.receive_output(timeout=3) == {"type": "websocket.close", "code": code}
    return error


async def closed_with(communicator: WebsocketCommunicator, code: int) -> None:
    while True:
        output = await communicator.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            assert output["code"] == code
            return


async def test_only_members_enter_a_private_room(connect: Connect) -> None:
    owner, owner_headers = await signed_in("olive")
    _, member_headers = await signed_in("mia")
    _, stranger_headers = await signed_in("sam")
    room = await database_sync_to_async(private_room_create)(name="secret", owner_id=owner.pk)
    await database_sync_to_async(member_add)(room=room, username="mia", added_by_id=owner.pk)

    for n, headers in enumerate((owner_headers, member_headers)):
        socket = await connect("secret", headers=headers)
        await socket.send_json_to({"message": "in", "client_id": f"c{n}"})
        # The other's message may come first (history or live); then this post's ack.
        while (frame := await receive(socket))["type"] == "message":
            pass
        assert (frame["type"], frame["client_id"]) == ("ack", f"c{n}")
    for headers in (stranger_headers, [ORIGIN]):  # another account, and a guest
        socket = await connect("secret", headers=headers)
        error = await refused_with(socket, protocol.CLOSE_FORBIDDEN)
        assert (error["type"], error["code"]) == ("error", "forbidden")


async def test_a_member_removed_is_cut_off_at_once_and_cannot_come_back(connect: Connect) -> None:
    owner, owner_headers = await signed_in("olive")
    _, member_headers = await signed_in("mia")
    room = await database_sync_to_async(private_room_create)(name="secret", owner_id=owner.pk)
    member = await database_sync_to_async(member_add)(
        room=room, username="mia", added_by_id=owner.pk
    )
    owners_socket = await connect("secret", headers=owner_headers)
    members_socket = await connect("secret", headers=member_headers)

    await database_sync_to_async(member_remove)(room=room, user_id=member.user_id)
    await closed_with(members_socket, protocol.CLOSE_FORBIDDEN)
    # The owner stays.
    await owners_socket.send_json_to({"message": "still here", "client_id": "s"})
    assert (await receive(owners_socket))["type"] == "ack"
    again = await connect("secret", headers=member_headers)
    await refused_with(again, protocol.CLOSE_FORBIDDEN)


async def test_a_banned_person_is_cut_off_everywhere_and_cannot_reconnect(
    connect: Connect,
) -> None:
    user, headers = await signed_in("troll")
    _, bystander_headers = await signed_in("bea")
    sockets = [await connect(room, headers=headers) for room in ("one", "two")]
    bystander = await connect("one", headers=bystander_headers)

    await database_sync_to_async(Ban.objects.create)(user=user, reason="spam")
    for socket in sockets:
        await closed_with(socket, protocol.CLOSE_FORBIDDEN)
    again = await connect("one", headers=headers)
    error = await refused_with(again, protocol.CLOSE_FORBIDDEN)
    assert "spam" in error["detail"]
    await bystander.send_json_to({"message": "fine", "client_id": "f"})
    assert (await receive(bystander))["type"] == "ack"


async def test_sign_in_required_closes_a_guests_socket_with_4401(
    connect: Connect, settings: Any
) -> None:
    settings.CHAT_REQUIRE_LOGIN = True
    guest = await connect("lobby")
    error = await refused_with(guest, protocol.CLOSE_SIGN_IN)
    assert error["code"] == "sign_in_required"
    _, headers = await signed_in("ada")
    member = await connect("lobby", headers=headers)
    await member.send_json_to({"message": "hi", "client_id": "h"})
    assert (await receive(member))["type"] == "ack"


async def test_a_guest_is_marked_as_one_and_a_signed_in_user_is_not(connect: Connect) -> None:
    _, headers = await signed_in("ada")
    member = await connect("lobby", headers=headers)
    guest = await connect("lobby")
    await member.send_json_to({"message": "from ada"})
    await guest.send_json_to({"message": "from a guest"})
    frames = [await receive(member), await receive(member)]
    by_text = {frame["message"]: frame for frame in frames}
    assert by_text["from ada"]["author"] == "ada"
    assert "guest" not in by_text["from ada"]
    assert by_text["from a guest"]["guest"] is True
