"""The wire protocol: parsing of client frames and the shapes of server frames.

docs/protocol.md is the prose version of this module; a change to one is a change to both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

MAX_MESSAGE_CHARS = 4000
# Frames larger than this close the socket (1009) instead of being parsed: a chat message
# at its longest, JSON-escaped, fits comfortably, and nobody else pays for a giant frame.
MAX_FRAME_BYTES = 64 * 1024
MAX_CLIENT_ID_CHARS = 64

CLOSE_TOO_BIG = 1009


class ErrorCode:
    """Stable `code` values of error frames (see docs/protocol.md)."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    UNKNOWN_TYPE = "unknown_type"
    EMPTY_MESSAGE = "empty_message"
    MESSAGE_TOO_LONG = "message_too_long"


class ProtocolError(Exception):
    """A client frame that cannot be accepted; becomes an error frame to its sender."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# --- client → server -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostMessage:
    """`{"type": "message", "message": ..., "client_id"?: ...}`; `type` may be omitted."""

    message: str
    client_id: str | None = None


ClientFrame = PostMessage

_POST_FIELDS = frozenset({"type", "message", "client_id"})


def parse_client_frame(text: str) -> ClientFrame:
    """Parse one text frame from a client, or raise ProtocolError saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_JSON, "Frames must be JSON text.") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "A frame must be a JSON object.")
    # The tutorial's clients send {"message": ...} with no type: that is a post.
    frame_type = data.get("type", "message")
    if frame_type == "message":
        return _parse_post(data)
    if not isinstance(frame_type, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "`type` must be a string.")
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {frame_type[:40]!r}.")


def _parse_post(data: dict[str, Any]) -> PostMessage:
    _reject_unknown_fields(data, _POST_FIELDS)
    message = data.get("message")
    if message is None:
        raise ProtocolError(ErrorCode.EMPTY_MESSAGE, "`message` is required.")
    if not isinstance(message, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "`message` must be a string.")
    if not message.strip():
        raise ProtocolError(ErrorCode.EMPTY_MESSAGE, "`message` must not be blank.")
    if len(message) > MAX_MESSAGE_CHARS:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LONG,
            f"Messages are at most {MAX_MESSAGE_CHARS} characters; this one has {len(message)}.",
        )
    if "\x00" in message:
        # PostgreSQL text cannot hold NUL, and no one types it.
        raise ProtocolError(ErrorCode.BAD_FRAME, "`message` must not contain NUL characters.")
    client_id = data.get("client_id")
    if client_id is not None and not (
        isinstance(client_id, str) and 0 < len(client_id) <= MAX_CLIENT_ID_CHARS
    ):
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"`client_id` must be a string of 1–{MAX_CLIENT_ID_CHARS} characters.",
        )
    return PostMessage(message=message, client_id=client_id)


def _reject_unknown_fields(data: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:5])
        raise ProtocolError(ErrorCode.BAD_FRAME, f"Unknown field(s): {names}.")


def frame_too_big(text: str) -> bool:
    """True if a text frame is over MAX_FRAME_BYTES once UTF-8 encoded."""
    # A str of n characters encodes to n..4n bytes: only encode when it could matter.
    if len(text) * 4 <= MAX_FRAME_BYTES:
        return False
    return (
        len(text) > MAX_FRAME_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES
    )


# --- server → client -------------------------------------------------------------------


class MessageFrame(TypedDict):
    """A chat message; `message` is its text, as in the tutorial."""

    type: Literal["message"]
    message: str
    client_id: NotRequired[str]


class ErrorFrame(TypedDict):
    """An answer to a frame that was refused; only its sender gets it."""

    type: Literal["error"]
    code: str
    detail: str


ServerFrame = MessageFrame | ErrorFrame


def encode(frame: ServerFrame) -> str:
    """Encode a server frame as compact JSON text."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def error_frame(error: ProtocolError) -> ErrorFrame:
    """The error frame for a refused client frame."""
    return {"type": "error", "code": error.code, "detail": error.detail}
