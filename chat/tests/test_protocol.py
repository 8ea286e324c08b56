"""Parsing client frames and encoding server frames, without a socket."""

import json

import pytest

from chat import protocol
from chat.protocol import PostMessage, ProtocolError


def test_tutorial_form_is_a_post() -> None:
    assert protocol.parse_client_frame('{"message": "hi"}') == PostMessage(message="hi")


def test_typed_form_with_client_id() -> None:
    frame = protocol.parse_client_frame('{"type": "message", "message": "hi", "client_id": "c1"}')
    assert frame == PostMessage(message="hi", client_id="c1")


def test_message_text_is_kept_exactly() -> None:
    text = "  spaced  \n<b>not bold</b>  "
    assert protocol.parse_client_frame(json.dumps({"message": text})).message == text


def test_unknown_type_is_named_but_truncated() -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_client_frame(json.dumps({"type": "x" * 1000}))
    assert caught.value.code == "unknown_type"
    assert len(caught.value.detail) < 100


def test_error_frame_shape() -> None:
    frame = protocol.error_frame(ProtocolError("bad_json", "Frames must be JSON text."))
    assert json.loads(protocol.encode(frame)) == {
        "type": "error",
        "code": "bad_json",
        "detail": "Frames must be JSON text.",
    }


def test_encode_keeps_unicode_readable_and_compact() -> None:
    assert (
        protocol.encode({"type": "message", "message": "é"}) == '{"type":"message","message":"é"}'
    )


@pytest.mark.parametrize(
    ("text", "too_big"),
    [
        ("a" * protocol.MAX_FRAME_BYTES, False),
        ("a" * (protocol.MAX_FRAME_BYTES + 1), True),
        ("é" * (protocol.MAX_FRAME_BYTES // 2), False),
        ("é" * (protocol.MAX_FRAME_BYTES // 2 + 1), True),
        ("😀" * (protocol.MAX_FRAME_BYTES // 4), False),
        ("😀" * (protocol.MAX_FRAME_BYTES // 4 + 1), True),
    ],
)
def test_frame_size_is_measured_in_utf8_bytes(text: str, too_big: bool) -> None:
    assert protocol.frame_too_big(text) is too_big
