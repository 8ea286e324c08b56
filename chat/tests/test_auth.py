"""The socket's user: a guest without a session is anonymous with no database trip; a signed-in
browser's session is resolved as Channels does."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from chat.testing.ws import ORIGIN, Connect, receive
from chat.tests.test_access_socket import signed_in
from mysite.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def get_user_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every call of Channels' `get_user` (the database trip), still made."""
    import channels.auth

    calls: list[Any] = []
    real = channels.auth.get_user

    async def counting(scope: Any) -> Any:
        calls.append(scope.get("path"))
        return await real(scope)

    monkeypatch.setattr(channels.auth, "get_user", counting)
    return calls


async def test_a_guest_socket_is_anonymous_without_a_session_lookup(
    connect: Connect, get_user_calls: list[Any]
) -> None:
    guest = await connect("lobby", query="sync=1")
    await receive(guest)
    await guest.send_json_to({"message": "hi", "client_id": "c"})
    frame = await receive(guest)
    while frame["type"] != "message":
        frame = await receive(guest)
    assert frame.get("guest") is True
    assert get_user_calls == []


async def test_a_signed_in_socket_is_its_user(connect: Connect, get_user_calls: list[Any]) -> None:
    _, headers = await signed_in("ada")
    socket = await connect("lobby", headers=headers, query="sync=1")
    await socket.send_json_to({"message": "hi", "client_id": "c"})
    frame = await receive(socket)
    while frame["type"] != "message":
        frame = await receive(socket)
    assert frame["author"] == "ada"
    assert "guest" not in frame
    assert len(get_user_calls) == 1


async def test_a_stale_session_cookie_is_a_guest() -> None:
    communicator = WebsocketCommunicator(
        application, "/ws/chat/lobby/", headers=[ORIGIN, (b"cookie", b"sessionid=expired-long-ago")]
    )
    connected, _ = await communicator.connect()
    assert connected
    await communicator.send_json_to({"message": "hi"})
    frame = await receive(communicator)
    assert frame.get("guest") is True
    await communicator.disconnect()
