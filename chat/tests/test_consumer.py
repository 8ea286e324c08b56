"""The consumer over a real ASGI stack (origin check, auth, routing), on both channel layers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from chat.protocol import CLOSE_TOO_BIG, MAX_FRAME_BYTES, MAX_MESSAGE_CHARS
from chat.testing.ws import ORIGIN, Connect, receive
from mysite.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_post_is_received_by_everyone_in_the_room(connect: Connect) -> None:
    alice = await connect("lobby")
    bob = await connect("lobby")

    await alice.send_json_to({"message": "hello"})

    for communicator in (alice, bob):
        frame = await receive(communicator)
        assert frame["type"] == "message"
        assert frame["message"] == "hello"


async def test_typed_form_with_client_id_is_acknowledged_then_broadcast(connect: Connect) -> None:
    alice = await connect("lobby")
    await alice.send_json_to({"type": "message", "message": "hi", "client_id": "c-1"})
    assert await receive(alice) == {"type": "ack", "client_id": "c-1", "seq": 1}
    frame = await receive(alice)
    assert (frame["type"], frame["seq"], frame["message"]) == ("message", 1, "hi")


async def test_other_rooms_do_not_see_it(connect: Connect) -> None:
    alice = await connect("room_1")
    carol = await connect("room_2")

    await alice.send_json_to({"message": "hello"})
    assert (await receive(alice))["message"] == "hello"
    # "hello" has been handed out: had carol been given it, it would come before her own post.
    await carol.send_json_to({"message": "marker"})

    frame = await receive(carol)
    assert (frame["seq"], frame["message"]) == (1, "marker")


async def test_text_is_passed_through_untouched(connect: Connect) -> None:
    alice = await connect("lobby")
    text = "<img src=x onerror=alert(1)> & “quotes” 👋\nsecond line"
    await alice.send_json_to({"message": text})
    assert (await receive(alice))["message"] == text


BAD_FRAMES = [
    pytest.param("not json", "bad_json", id="not-json"),
    pytest.param("", "bad_json", id="empty-frame"),
    pytest.param("[1, 2]", "bad_frame", id="array"),
    pytest.param("42", "bad_frame", id="number"),
    pytest.param('"hi"', "bad_frame", id="json-string"),
    pytest.param("null", "bad_frame", id="null"),
    pytest.param("{}", "empty_message", id="missing-message"),
    pytest.param('{"message": null}', "empty_message", id="null-message"),
    pytest.param('{"message": ""}', "empty_message", id="empty-message"),
    pytest.param('{"message": "   \\n\\t "}', "empty_message", id="blank-message"),
    pytest.param('{"message": 5}', "bad_frame", id="number-message"),
    pytest.param('{"message": ["hi"]}', "bad_frame", id="list-message"),
    pytest.param('{"message": {"text": "hi"}}', "bad_frame", id="object-message"),
    pytest.param('{"message": "a\\u0000b"}', "bad_frame", id="nul-in-message"),
    pytest.param('{"type": 7, "message": "hi"}', "bad_frame", id="number-type"),
    pytest.param('{"type": "dance"}', "unknown_type", id="unknown-type"),
    pytest.param('{"type": "chat.message", "message": "hi"}', "unknown_type", id="layer-type"),
    pytest.param('{"message": "hi", "author": "admin"}', "bad_frame", id="unknown-field"),
    pytest.param('{"message": "hi", "client_id": 12}', "bad_frame", id="number-client-id"),
    pytest.param('{"message": "hi", "client_id": ""}', "bad_frame", id="empty-client-id"),
    pytest.param(
        json.dumps({"message": "hi", "client_id": "x" * 65}), "bad_frame", id="long-client-id"
    ),
    pytest.param(
        json.dumps({"message": "x" * (MAX_MESSAGE_CHARS + 1)}), "message_too_long", id="too-long"
    ),
]


@pytest.mark.parametrize(("text", "code"), BAD_FRAMES)
async def test_bad_input_gets_an_error_only_the_sender_sees(
    connect: Connect, text: str, code: str
) -> None:
    sender = await connect("lobby")
    bystander = await connect("lobby")

    # send_input, because the communicator's send_to refuses an empty frame.
    await sender.send_input({"type": "websocket.receive", "text": text})

    error = await receive(sender)
    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["detail"], str)
    assert error["detail"]
    # The connection and the room keep working; and the post is the bystander's next frame,
    # so nothing of the refused frame reached it (anything would have come first).
    await sender.send_json_to({"message": "still here"})
    for communicator in (sender, bystander):
        frame = await receive(communicator)
        assert (frame["type"], frame["seq"], frame["message"]) == ("message", 1, "still here")


async def test_binary_frames_get_an_error(connect: Connect) -> None:
    sender = await connect("lobby")
    await sender.send_to(bytes_data=b'{"message": "hi"}')
    error = await receive(sender)
    assert error["code"] == "binary_not_supported"
    await sender.send_json_to({"message": "ok"})
    assert (await receive(sender))["message"] == "ok"


async def test_longest_message_is_accepted(connect: Connect) -> None:
    sender = await connect("lobby")
    text = "é" * MAX_MESSAGE_CHARS
    await sender.send_json_to({"message": text})
    assert (await receive(sender))["message"] == text


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"text_data": "x" * (MAX_FRAME_BYTES + 1)}, id="text"),
        # 16,385 four-byte characters: few characters, but over the cap in bytes.
        pytest.param({"text_data": "😀" * (MAX_FRAME_BYTES // 4 + 1)}, id="text-utf8"),
        pytest.param({"bytes_data": b"x" * (MAX_FRAME_BYTES + 1)}, id="binary"),
    ],
)
async def test_frames_over_the_hard_cap_close_with_4009(
    connect: Connect, frame: dict[str, Any]
) -> None:
    sender = await connect("lobby")
    bystander = await connect("lobby")

    await sender.send_to(**frame)

    assert await sender.receive_output(timeout=2) == {
        "type": "websocket.close",
        "code": CLOSE_TOO_BIG,
    }
    # Anything the giant frame caused would reach the bystander before its own post does.
    await bystander.send_json_to({"message": "marker"})
    frame = await receive(bystander)
    assert (frame["type"], frame["seq"], frame["message"]) == ("message", 1, "marker")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"origin", b"http://evil.example")], id="foreign"),
        pytest.param([(b"origin", b"http://localhost.evil.example")], id="lookalike"),
        pytest.param([], id="missing"),
    ],
)
async def test_foreign_or_missing_origin_is_refused(
    layer: str, headers: list[tuple[bytes, bytes]]
) -> None:
    communicator = WebsocketCommunicator(application, "/ws/chat/lobby/", headers=headers)
    connected, _ = await communicator.connect()
    assert not connected


@pytest.mark.parametrize(
    "path",
    [
        "/ws/chat/has space/",
        "/ws/chat/café/",
        "/ws/chat/" + "a" * 65 + "/",
        "/ws/chat/../",
        "/ws/chat/./",
        "/ws/chat/a/b/",
        "/ws/chat//",
        "/ws/chat/lobby",
        "/ws/elsewhere/",
    ],
)
async def test_invalid_room_names_are_refused(layer: str, path: str) -> None:
    communicator = WebsocketCommunicator(application, path, headers=[ORIGIN])
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.wait()


async def test_longest_room_name_is_accepted(connect: Connect) -> None:
    room = "a-Z_0." + "b" * 58
    alice = await connect(room)
    await alice.send_json_to({"message": "hi"})
    assert (await receive(alice))["message"] == "hi"
