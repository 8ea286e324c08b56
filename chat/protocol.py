"""The wire protocol: parsing of client frames and the shapes of server frames.

docs/protocol.md is the prose version of this module; a change to one is a change to both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NotRequired, Protocol, TypedDict
from urllib.parse import parse_qs

from chat.sizes import MAX_CLIENT_ID_CHARS, MAX_MESSAGE_CHARS

# Frames larger than this close the socket (4009) instead of being parsed: a chat message
# at its longest, JSON-escaped, fits comfortably, and nobody else pays for a giant frame.
MAX_FRAME_BYTES = 64 * 1024
# A joining client gets this many of the latest messages; history requests get at most MAX.
HISTORY_ON_JOIN = 50
HISTORY_MAX = 100
# A client says it is typing at most this often (seconds); others show it for a little longer.
TYPING_INTERVAL = 3.0

# Close codes (docs/protocol.md). autobahn, under daphne, refuses any application close code
# outside 1000 and 3000–4999, so the server's own reasons are all 4xxx.
CLOSE_TOO_BIG = 4009  # a frame over MAX_FRAME_BYTES
CLOSE_SERVER_ERROR = 4011  # this socket's handler failed; reconnect and resume
CLOSE_SIGN_IN = 4401  # CHAT_REQUIRE_LOGIN is on and the socket has no signed-in user
CLOSE_FORBIDDEN = 4403  # a private room this person is not a member of, or a ban
CLOSE_ROOM_GONE = 4404  # the room was deleted; reconnect to start it afresh
CLOSE_RATE_LIMITED = 4429  # persistent flooding, or too many sockets; reconnect later


class ErrorCode:
    """Stable `code` values of error frames (see docs/protocol.md)."""

    BAD_JSON = "bad_json"
    BAD_FRAME = "bad_frame"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    UNKNOWN_TYPE = "unknown_type"
    EMPTY_MESSAGE = "empty_message"
    MESSAGE_TOO_LONG = "message_too_long"
    BAD_RESUME = "bad_resume"
    BAD_HISTORY = "bad_history"
    NOT_STORED = "not_stored"
    REJECTED = "rejected"
    RATE_LIMITED = "rate_limited"
    SIGN_IN_REQUIRED = "sign_in_required"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"


class ProtocolError(Exception):
    """A client frame that cannot be accepted; becomes an error frame to its sender."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        client_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        # The refused post's own id, if it had a valid one: its sender can stop resending it.
        self.client_id = client_id
        self.retry_after = retry_after


# --- client → server -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PostMessage:
    """`{"type": "message", "message": ..., "client_id"?: ...}`; `type` may be omitted."""

    message: str
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """`{"type": "history", "before" | "after": seq, "limit"?: n}`: a page of stored messages."""

    before: int | None
    after: int | None
    limit: int


@dataclass(frozen=True, slots=True)
class Typing:
    """`{"type": "typing"}`: this socket's person is typing (sent at most every 3 s)."""


@dataclass(frozen=True, slots=True)
class EditMessage:
    """`{"type": "edit", "seq": n, "message": ..., "client_id"?: ...}`: new text for post n."""

    seq: int
    message: str
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeleteMessage:
    """`{"type": "delete", "seq": n, "client_id"?: ...}`: remove post n."""

    seq: int
    client_id: str | None = None


ClientFrame = PostMessage | HistoryRequest | Typing | EditMessage | DeleteMessage

_POST_FIELDS = frozenset({"type", "message", "client_id"})
_EDIT_FIELDS = frozenset({"type", "seq", "message", "client_id"})
_DELETE_FIELDS = frozenset({"type", "seq", "client_id"})
_HISTORY_FIELDS = frozenset({"type", "before", "after", "limit"})
_TYPING_FIELDS = frozenset({"type"})


def parse_client_frame(text: str) -> ClientFrame:
    """Parse one text frame from a client, or raise ProtocolError saying what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        # RecursionError: JSON nested thousands deep, which the parser gives up on.
        raise ProtocolError(ErrorCode.BAD_JSON, "Frames must be JSON text.") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_FRAME, "A frame must be a JSON object.")
    # The tutorial's clients send {"message": ...} with no type: that is a post.
    frame_type = data.get("type", "message")
    if frame_type == "message":
        return _parse_post(data)
    if frame_type == "history":
        return _parse_history(data)
    if frame_type == "typing":
        _reject_unknown_fields(data, _TYPING_FIELDS)
        return Typing()
    if frame_type == "edit":
        return _parse_edit(data)
    if frame_type == "delete":
        return _parse_delete(data)
    if not isinstance(frame_type, str):
        raise ProtocolError(ErrorCode.BAD_FRAME, "`type` must be a string.")
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"Unknown frame type {frame_type[:40]!r}.")


def _parse_post(data: dict[str, Any]) -> PostMessage:
    _reject_unknown_fields(data, _POST_FIELDS)
    client_id = _client_id(data)
    try:
        return PostMessage(message=_post_text(data.get("message")), client_id=client_id)
    except ProtocolError as error:
        error.client_id = client_id
        raise


def _parse_edit(data: dict[str, Any]) -> EditMessage:
    _reject_unknown_fields(data, _EDIT_FIELDS)
    client_id = _client_id(data)
    try:
        return EditMessage(
            seq=_target_seq(data), message=_post_text(data.get("message")), client_id=client_id
        )
    except ProtocolError as error:
        error.client_id = client_id
        raise


def _parse_delete(data: dict[str, Any]) -> DeleteMessage:
    _reject_unknown_fields(data, _DELETE_FIELDS)
    client_id = _client_id(data)
    try:
        return DeleteMessage(seq=_target_seq(data), client_id=client_id)
    except ProtocolError as error:
        error.client_id = client_id
        raise


def _client_id(data: dict[str, Any]) -> str | None:
    client_id = data.get("client_id")
    if client_id is not None:
        if not (isinstance(client_id, str) and 0 < len(client_id) <= MAX_CLIENT_ID_CHARS):
            raise ProtocolError(
                ErrorCode.BAD_FRAME,
                f"`client_id` must be a string of 1–{MAX_CLIENT_ID_CHARS} characters.",
            )
        _require_storable("client_id", client_id)
    return client_id


def _target_seq(data: dict[str, Any]) -> int:
    seq = data.get("seq")
    if not _is_int_at_least(seq, 1):
        raise ProtocolError(ErrorCode.BAD_FRAME, "`seq` must be the number of a message (≥ 1).")
    assert isinstance(seq, int)
    return seq


def _post_text(message: object) -> str:
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
    _require_storable("message", message)
    return message


def is_storable(text: str) -> bool:
    """True if every supported database (and a WebSocket text frame) can hold `text`.

    JSON lets a client send a lone UTF-16 surrogate (`"\\ud800"`): Python keeps it in a str,
    but it has no UTF-8 form, so SQLite, PostgreSQL and the socket all fail to encode it.
    PostgreSQL also refuses NUL anywhere in text.
    """
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require_storable(name: str, value: str) -> None:
    if not is_storable(value):
        raise ProtocolError(
            ErrorCode.BAD_FRAME,
            f"`{name}` must be valid Unicode text without NUL characters or lone surrogates.",
        )


def _parse_history(data: dict[str, Any]) -> HistoryRequest:
    _reject_unknown_fields(data, _HISTORY_FIELDS)
    before, after = data.get("before"), data.get("after")
    if (before is None) == (after is None):
        raise ProtocolError(ErrorCode.BAD_HISTORY, "Give exactly one of `before` and `after`.")
    limit = data.get("limit")
    if limit is None:  # absent, or null: the default page
        limit = HISTORY_ON_JOIN
    for name, value, low in (("before", before, 1), ("after", after, 0), ("limit", limit, 1)):
        if value is not None and not _is_int_at_least(value, low):
            raise ProtocolError(ErrorCode.BAD_HISTORY, f"`{name}` must be an integer ≥ {low}.")
    return HistoryRequest(before=before, after=after, limit=min(limit, HISTORY_MAX))


def wants_synced(query_string: bytes) -> bool:
    """True if the handshake asked for a `synced` frame (`?sync=1`, or any `?after=`)."""
    params = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    return "after" in params or params.get("sync", [""])[-1] == "1"


def parse_resume(query_string: bytes) -> int | None:
    """The `after` sequence number of a handshake's query string (`?after=N`), if any."""
    params = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    values = params.get("after")
    if not values:
        return None
    value = values[-1]
    if not (value.isascii() and value.isdigit() and len(value) <= 18):
        raise ProtocolError(ErrorCode.BAD_RESUME, "`after` must be a sequence number (0 or more).")
    return int(value)


def _is_int_at_least(value: object, low: int) -> bool:
    # bool is an int in Python but not a number anyone means here.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < 2**63


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
    """A stored chat message; `message` is its text, as in the tutorial."""

    type: Literal["message"]
    seq: int
    message: str
    author: str
    time: str
    # The sender's own id for the post, so its page can match it to what it is still sending.
    client_id: NotRequired[str]
    # True when the author is a guest (no account), who must not pass for a registered user.
    guest: NotRequired[bool]
    # When the text was last changed (history and catch-up show a post as it is now).
    edited: NotRequired[str]
    # True once deleted; `message` is then "".
    deleted: NotRequired[bool]


class ChangeFrame(TypedDict):
    """An edit or a delete of post `target`, itself numbered `seq` in the room's sequence."""

    type: Literal["edit", "delete"]
    seq: int
    target: int
    # Who made the change (the author, or a moderator), and when.
    author: str
    time: str
    # The new text (edits only; "" if the post has been deleted since).
    message: NotRequired[str]
    client_id: NotRequired[str]
    guest: NotRequired[bool]


class AckFrame(TypedDict):
    """To the sender only: its post (named by `client_id`) is stored as `seq`."""

    type: Literal["ack"]
    client_id: str
    seq: int


class HistoryFrame(TypedDict):
    """The answer to a history request: stored messages, oldest first."""

    type: Literal["history"]
    messages: list[MessageFrame]


class SyncedFrame(TypedDict):
    """After the history or catch-up: the socket now holds everything up to `last_seq`."""

    type: Literal["synced"]
    last_seq: int


class ErrorFrame(TypedDict):
    """An answer to a frame that was refused; only its sender gets it."""

    type: Literal["error"]
    code: str
    detail: str
    # The refused post's own id, when the error is about a post that carried one.
    client_id: NotRequired[str]
    # With `rate_limited`: seconds until the same frame can succeed.
    retry_after: NotRequired[float]


class TypingFrame(TypedDict):
    """Someone else in the room is typing; show it for a few seconds unless it comes again."""

    type: Literal["typing"]
    name: str


class PersonName(TypedDict):
    """One person in a presence frame."""

    name: str
    # True for a guest (no account), shown as one, as in a message frame.
    guest: NotRequired[bool]


class PresenceFrame(TypedDict):
    """Who is in the room: everyone (`people`: first, after the handshake), or what changed
    since the last presence frame (`joined` and `left`, either maybe empty)."""

    type: Literal["presence"]
    people: NotRequired[list[PersonName]]
    joined: NotRequired[list[PersonName]]
    left: NotRequired[list[PersonName]]


ServerFrame = (
    MessageFrame
    | ChangeFrame
    | AckFrame
    | HistoryFrame
    | SyncedFrame
    | ErrorFrame
    | TypingFrame
    | PresenceFrame
)


def encode(frame: ServerFrame) -> str:
    """Encode a server frame as compact JSON text."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def history_reply(messages: list[str], *, keep: Literal["newest", "oldest"]) -> str:
    """A `history` frame of encoded message frames, cut to fit in MAX_FRAME_BYTES.

    When a page is too big, `keep` says which end stays: the newest when paging back (the
    client asks again before the oldest it got), the oldest when paging forward. A page always
    holds at least one message: a message frame at its longest is far under the limit.
    """
    head, tail = '{"type":"history","messages":[', "]}"
    budget = MAX_FRAME_BYTES - len(head) - len(tail)
    ordered = messages if keep == "oldest" else messages[::-1]
    kept: list[str] = []
    for text in ordered:
        # The message and its comma.
        size = len(text.encode("utf-8", "surrogatepass")) + 1
        if kept and size > budget:
            break
        kept.append(text)
        budget -= size
    if keep == "newest":
        kept.reverse()
    return head + ",".join(kept) + tail


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. `2026-11-24T13:45:01.123Z`."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StoredMessage(Protocol):
    """What a message frame shows: a `chat.models.Message`, or a row of one."""

    @property
    def seq(self) -> int: ...
    @property
    def body(self) -> str: ...
    @property
    def author_name(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def client_id(self) -> str | None: ...
    @property
    def author_id(self) -> int | None: ...
    @property
    def kind(self) -> int: ...
    @property
    def target_seq(self) -> int | None: ...
    @property
    def edited_at(self) -> datetime | None: ...
    @property
    def deleted(self) -> bool: ...


# `Message.kind` (chat/models.py): a post, an edit, a delete.
KIND_MESSAGE, KIND_EDIT, KIND_DELETE = 0, 1, 2


def stored_frame(message: StoredMessage) -> MessageFrame | ChangeFrame:
    """The frame that shows a stored event of a room (a post, an edit or a delete)."""
    if message.kind == KIND_MESSAGE:
        return message_frame(message)
    change: ChangeFrame = {
        "type": "edit" if message.kind == KIND_EDIT else "delete",
        "seq": message.seq,
        "target": message.target_seq or 0,
        "author": message.author_name,
        "time": format_time(message.created_at),
    }
    if message.kind == KIND_EDIT:
        change["message"] = message.body
    if message.client_id is not None:
        change["client_id"] = message.client_id
    if message.author_id is None:
        change["guest"] = True
    return change


def message_frame(message: StoredMessage) -> MessageFrame:
    """The frame that shows a stored post to clients, as it is now."""
    frame: MessageFrame = {
        "type": "message",
        "seq": message.seq,
        "message": message.body,
        "author": message.author_name,
        "time": format_time(message.created_at),
    }
    if message.client_id is not None:
        frame["client_id"] = message.client_id
    if message.author_id is None:
        frame["guest"] = True
    if message.edited_at is not None:
        frame["edited"] = format_time(message.edited_at)
    if message.deleted:
        frame["deleted"] = True
    return frame


def shown_to_tutorial_clients(message: StoredMessage) -> bool:
    """True for what a client that does not speak this protocol is sent: posts not deleted.

    The tutorial's client appends the `message` of every frame it gets to its log.
    """
    return message.kind == KIND_MESSAGE and not message.deleted


def error_frame(error: ProtocolError, *, client_id: str | None = None) -> ErrorFrame:
    """The error frame for a refused client frame."""
    frame: ErrorFrame = {"type": "error", "code": error.code, "detail": error.detail}
    client_id = client_id if client_id is not None else error.client_id
    if client_id is not None:
        frame["client_id"] = client_id
    if error.retry_after is not None:
        frame["retry_after"] = round(error.retry_after, 3)
    return frame
