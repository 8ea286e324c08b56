"""Parsing client frames and encoding server frames, without a socket."""

import json

import pytest

from chat import protocol
from chat.protocol import HistoryRequest, PostMessage, ProtocolError


def test_tutorial_form_is_a_post() -> None:
    assert protocol.parse_client_frame('{"message": "hi"}') == PostMessage(message="hi")


def test_typed_form_with_client_id() -> None:
    frame = protocol.parse_client_frame('{"type": "message", "message": "hi", "client_id": "c1"}')
    assert frame == PostMessage(message="hi", client_id="c1")


def test_message_text_is_kept_exactly() -> None:
    text = "  spaced  \n<b>not bold</b>  "
    assert protocol.parse_client_frame(json.dumps({"message": text})) == PostMessage(message=text)


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
    frame: protocol.ErrorFrame = {"type": "error", "code": "x", "detail": "é"}
    assert protocol.encode(frame) == '{"type":"error","code":"x","detail":"é"}'


@pytest.mark.parametrize(
    ("text", "request_"),
    [
        ('{"type": "history", "before": 11}', HistoryRequest(before=11, after=None, limit=50)),
        ('{"type": "history", "after": 0, "limit": 7}', HistoryRequest(None, 0, 7)),
        ('{"type": "history", "after": 3, "limit": 5000}', HistoryRequest(None, 3, 100)),
    ],
)
def test_history_requests(text: str, request_: HistoryRequest) -> None:
    assert protocol.parse_client_frame(text) == request_


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "history"}',
        '{"type": "history", "before": 5, "after": 1}',
        '{"type": "history", "before": 0}',
        '{"type": "history", "after": -1}',
        '{"type": "history", "after": true}',
        '{"type": "history", "after": 1.5}',
        '{"type": "history", "after": "3"}',
        '{"type": "history", "after": 1, "limit": 0}',
        '{"type": "history", "after": 99999999999999999999}',
    ],
)
def test_bad_history_requests(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_client_frame(text)
    assert caught.value.code == "bad_history"


@pytest.mark.parametrize(
    ("query", "after"),
    [(b"", None), (b"after=0", 0), (b"after=42", 42), (b"x=1&after=7", 7)],
)
def test_resume_position(query: bytes, after: int | None) -> None:
    assert protocol.parse_resume(query) == after


@pytest.mark.parametrize(
    "query", [b"after=", b"after=-1", b"after=x", b"after=1e3", b"after=" + b"9" * 30]
)
def test_bad_resume_position(query: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.parse_resume(query)
    assert caught.value.code == "bad_resume"


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


@pytest.mark.parametrize(
    ("query", "wanted"),
    [(b"", False), (b"sync=1", True), (b"sync=0", False), (b"after=0", True), (b"x=1", False)],
)
def test_synced_is_sent_when_asked_for(query: bytes, wanted: bool) -> None:
    assert protocol.wants_synced(query) is wanted
