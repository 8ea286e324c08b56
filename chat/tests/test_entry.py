"""chat/entry.py: the handshake's steps as plain calls, so an open socket holds one coroutine."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore

from chat import auth
from chat.consumers import ChatConsumer, RefuseConsumer
from chat.entry import Entry, route
from chat.routing import ConsumerApp
from chat.testing.ws import ORIGIN, receive
from chat.tests.test_access_socket import signed_in
from mysite.asgi import application


def _scope(path: str, headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> Any:
    return {"type": "websocket", "path": path, "headers": headers or [ORIGIN], **extra}


def test_a_room_path_routes_to_the_chat_consumer_with_its_room_in_the_scope() -> None:
    scope = _scope("/ws/chat/lobby_2/")
    app = route(scope)
    assert isinstance(app, ConsumerApp)
    assert app.consumer_class is ChatConsumer
    assert scope["url_route"] == {"args": (), "kwargs": {"room_name": "lobby_2"}}


@pytest.mark.parametrize(
    "path", ["/ws/chat/", "/ws/chat/a b/", "/ws/chat/lobby", "/elsewhere/", "/ws/chat/" + "x" * 500]
)
def test_any_other_path_routes_to_the_refusal(path: str) -> None:
    app = route(_scope(path))
    assert isinstance(app, ConsumerApp)
    assert app.consumer_class is RefuseConsumer


def test_a_root_path_is_taken_off_before_routing() -> None:
    scope = _scope("/chat-app/ws/chat/lobby/", root_path="/chat-app")
    assert route(scope).consumer_class is ChatConsumer  # type: ignore[attr-defined]
    assert scope["url_route"]["kwargs"] == {"room_name": "lobby"}


def test_an_open_socket_runs_the_consumers_coroutine_and_no_other() -> None:
    """What daphne runs for a socket is ChatConsumer.__call__ itself: no layer's frame."""

    async def http(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a WebSocket went to HTTP")

    coroutine = Entry(http)(_scope("/ws/chat/lobby/"), None, None)
    try:
        assert coroutine.cr_code is ChatConsumer.__call__.__code__  # type: ignore[attr-defined]
    finally:
        coroutine.close()  # type: ignore[attr-defined]
    assert isinstance(application, Entry)  # the entry is what mysite/asgi.py serves


def test_scope_types_other_than_http_and_websocket_are_refused() -> None:
    with pytest.raises(ValueError, match="lifespan"):
        Entry(ConsumerApp(ChatConsumer))({"type": "lifespan"}, None, None)


@pytest.mark.parametrize(
    "cookie",
    [
        b"",
        b"sessionid=",
        b"sessionid=short",  # not the shape of a session key: no session, as Django decides
        b"sessionid=\xff\xfe; other=1",
        b"=;;;=;sessionid",
    ],
)
def test_a_garbage_session_cookie_is_a_guest_at_once(cookie: bytes) -> None:
    scope = _scope("/ws/chat/lobby/", [ORIGIN, (b"cookie", cookie)])
    auth.read_session_cookie(scope)
    assert scope["user"] is auth.ANONYMOUS
    assert "session" not in scope
    assert isinstance(scope["cookies"], dict)


def test_a_session_cookie_is_read_into_a_session_the_user_is_resolved_from_later() -> None:
    key = "k" * 32
    scope = _scope("/ws/chat/lobby/", [ORIGIN, (b"cookie", f"sessionid={key}; x=1".encode())])
    auth.read_session_cookie(scope)
    assert isinstance(scope["session"], SessionStore)
    assert scope["session"].session_key == key
    assert scope["cookies"] == {"sessionid": key, "x": "1"}
    assert "user" not in scope  # chat/consumers.py awaits auth.resolve_user in connect


@pytest.mark.django_db(transaction=True)
async def test_a_hostile_cookie_header_costs_only_its_sender_and_others_go_on(layer: str) -> None:
    _, headers = await signed_in("carol")
    carol = WebsocketCommunicator(application, "/ws/chat/cookies/", headers=headers)
    assert (await carol.connect())[0]
    hostile = WebsocketCommunicator(
        application, "/ws/chat/cookies/", headers=[ORIGIN, (b"cookie", b"sessionid=" + b"%" * 9000)]
    )
    # A session key of a valid shape that no session has: looked up once, then a guest.
    assert (await hostile.connect())[0]
    await hostile.send_json_to({"message": "from the guest"})
    await carol.send_json_to({"message": "from carol"})
    seen = [await receive(carol), await receive(carol)]
    assert {(f["message"], f.get("guest", False)) for f in seen} == {
        ("from the guest", True),
        ("from carol", False),
    }
    assert {f["author"] for f in seen if f["message"] == "from carol"} == {"carol"}
    await hostile.disconnect()
    await carol.disconnect()
