"""Hostile frames, drawn by Hypothesis, through the real consumer and writer.

An attacker's socket sends what a client can put in a WebSocket frame: any Unicode (lone
surrogates too, escaped and raw), NUL, deep nesting, huge and non-finite numbers, unknown
fields and types, fields of the wrong type, binary, empty and oversized frames, mixed with
valid posts and history requests. Three properties (invariant 2: bad input gets a clear answer
and harms no one else), each its own test:

1. every frame gets a documented answer (docs/protocol.md) and nothing escapes a handler;
2. no other socket's post fails, in the same room or another, though they share the batches;
3. the room keeps working, and the database holds exactly the attacker's valid posts.

Hypothesis drives synchronous functions, so each test runs its examples in a worker thread
that hands every example's coroutine to the test's own event loop: the examples share one hub
and one writer, as a process's sockets do, and each example has rooms of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, NotRequired, TypeAlias, TypeVar, get_args, get_origin, get_type_hints

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chat import protocol
from chat.models import Message
from chat.protocol import (
    HISTORY_ON_JOIN,
    MAX_CLIENT_ID_CHARS,
    MAX_FRAME_BYTES,
    MAX_MESSAGE_CHARS,
    ErrorCode,
)
from chat.testing.ws import ORIGIN
from mysite.asgi import application

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # In-memory layer only: what is under test is the consumer and the writer, not Redis.
    pytest.mark.parametrize("layer", ["memory"], indirect=True),
]

T = TypeVar("T")
APPLICATION_CLOSE_CODES = range(4000, 5000)
# Long enough for a PostgreSQL commit on a busy machine; a missing answer fails after this.
RECEIVE_TIMEOUT = 5.0

ERROR_CODES = frozenset(code for name, code in vars(ErrorCode).items() if name.isupper())

# Examples are whole socket sessions, with frames of up to 64 KiB: slow, and large, on purpose.
FUZZ = settings(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# --- what the attacker sends -----------------------------------------------------------------


class Raw(str):
    """JSON text written into a frame as it is: NaN, 1e400, a 401-digit integer, -0."""


@dataclass(frozen=True)
class Obj:
    """A JSON object as written: its members in order, the same name twice allowed."""

    members: tuple[tuple[str, Json], ...]


Json: TypeAlias = "bool | int | float | str | list[Json] | Obj | None"


def render(value: Json, *, ascii_only: bool) -> str:
    """JSON text; `ascii_only` writes lone surrogates as escapes, otherwise as code points."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Obj):
        members = (
            f"{render(name, ascii_only=ascii_only)}:{render(item, ascii_only=ascii_only)}"
            for name, item in value.members
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(item, ascii_only=ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


@dataclass(frozen=True)
class Post:
    """A valid post: what it stores, unless its client_id was stored before."""

    body: str
    client_id: str | None


@dataclass(frozen=True, repr=False)
class Frame:
    """One frame from the attacker, and the answers docs/protocol.md allows for it.

    `answers` is None when any documented answer will do; otherwise each is "ack", "history",
    "none" (a post without client_id: its broadcast only), "close" or "error:<code>".
    """

    text: str | None = None
    data: bytes | None = None
    answers: frozenset[str] | None = None
    post: Post | None = None

    def __repr__(self) -> str:
        payload = self.text if self.text is not None else self.data
        assert payload is not None
        shown = repr(payload[:80]) + (f"…({len(payload)})" if len(payload) > 80 else "")
        answers = sorted(self.answers) if self.answers is not None else "any"
        return f"Frame({shown}, answers={answers})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints falsifying examples with this, and 64 KiB frames in full otherwise.
        printer.text(repr(self))


def frame(value: Json, *, ascii_only: bool, answers: Iterable[str] | None) -> Frame:
    """A text frame holding `value`."""
    allowed = None if answers is None else frozenset(answers)
    return Frame(text=render(value, ascii_only=ascii_only), answers=allowed)


def mixed(*weighted: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """Values from the strategies, each as often as its weight says.

    `a | b` would not do: it weighs every branch of a nested `one_of` alike, so the many kinds
    of junk would crowd out the posts.
    """
    choices = [strategy for weight, strategy in weighted for _ in range(weight)]
    return st.sampled_from(choices).flatmap(lambda strategy: strategy)


CLOSE = frozenset({"close"})
ANY_CHAR = st.characters() | st.characters(categories=["Cs"])
SURROGATE = st.characters(categories=["Cs"])
STORABLE_CHAR = st.characters(codec="utf-8", exclude_characters="\x00")
STORABLE_SOLID = STORABLE_CHAR.filter(str.strip)
any_text = st.text(ANY_CHAR, max_size=12)
ODD_NUMBERS = st.sampled_from(
    [Raw(text) for text in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400", "-0", "-0.0", "1E2")]
    + [Raw("1" + "0" * 400), Raw("-" + "9" * 400)]
)
json_values: st.SearchStrategy[Json] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text | ODD_NUMBERS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.builds(Obj, st.lists(st.tuples(any_text, inner), max_size=3).map(tuple))
    ),
    max_leaves=6,
)
not_text = json_values.filter(
    lambda v: v is not None and (isinstance(v, Raw) or not isinstance(v, str))
)
bodies = (
    st.text(STORABLE_CHAR, min_size=1, max_size=40)
    | STORABLE_SOLID.map(lambda c: c * MAX_MESSAGE_CHARS)
).filter(str.strip)
client_ids = st.text(STORABLE_CHAR, min_size=1, max_size=MAX_CLIENT_ID_CHARS) | st.sampled_from(
    ["resent-1", "resent-2"]
)
FIELDS = ("type", "message", "client_id", "before", "after", "limit")
unknown_names = any_text.filter(lambda name: name not in FIELDS)


@st.composite
def valid_posts(draw: st.DrawFn) -> Frame:
    """A post the server must store (once per client_id) and acknowledge if it has an id."""
    body = draw(bodies)
    client_id = draw(st.none() | client_ids)
    members: list[tuple[str, Json]] = [("message", body)]
    if client_id is not None:
        members.append(("client_id", client_id))
    if draw(st.booleans()):
        members.append(("type", "message"))
    text = render(Obj(tuple(draw(st.permutations(members)))), ascii_only=draw(st.booleans()))
    answer = "ack" if client_id is not None else "none"
    return Frame(text=text, answers=frozenset({answer}), post=Post(body, client_id))


def _spliced(draw: st.DrawFn, into: str, bad: st.SearchStrategy[str]) -> str:
    cut = draw(st.integers(0, len(into)))
    return into[:cut] + draw(bad) + into[cut:]


@st.composite
def refused_posts(draw: st.DrawFn) -> Frame:
    """A post with exactly one defect, and the error code docs/protocol.md gives it."""
    fields: dict[str, Json] = {"message": draw(bodies.filter(lambda b: len(b) < 100))}
    if draw(st.booleans()):
        fields["client_id"] = draw(st.text(STORABLE_CHAR, min_size=1, max_size=32))
    if draw(st.booleans()):
        fields["type"] = "message"
    # Half of them are text the database cannot hold: what can poison a whole batch.
    defect = draw(
        st.sampled_from(
            ["surrogate in message", "NUL in message", "surrogate in client_id", "NUL in client_id"]
        )
        | st.sampled_from(
            [
                "message too long",
                "message not text",
                "message blank",
                "client_id not text",
                "client_id empty or too long",
                "unknown field",
                "type not text",
                "unknown type",
            ]
        )
    )
    code = ErrorCode.BAD_FRAME
    body = str(fields["message"])
    if defect == "surrogate in message":
        fields["message"] = _spliced(draw, body, SURROGATE)
    elif defect == "NUL in message":
        fields["message"] = _spliced(draw, body, st.just("\x00"))
    elif defect == "surrogate in client_id":
        fields["client_id"] = _spliced(draw, str(fields.get("client_id", "")), SURROGATE)
    elif defect == "NUL in client_id":
        fields["client_id"] = _spliced(draw, str(fields.get("client_id", "")), st.just("\x00"))
    elif defect == "message too long":
        extra = draw(st.integers(1, 3))
        fields["message"] = draw(STORABLE_SOLID) * (MAX_MESSAGE_CHARS + extra)
        code = ErrorCode.MESSAGE_TOO_LONG
    elif defect == "message not text":
        fields["message"] = draw(not_text)
    elif defect == "message blank":
        blank = st.text(st.sampled_from(" \t\n\r\u00a0\u2003\u3000"), max_size=5)
        fields["message"] = draw(st.none() | blank)
        if draw(st.booleans()):
            del fields["message"]
        code = ErrorCode.EMPTY_MESSAGE
    elif defect == "client_id not text":
        fields["client_id"] = draw(not_text)
    elif defect == "client_id empty or too long":
        fields["client_id"] = "c" * draw(st.sampled_from([0, MAX_CLIENT_ID_CHARS + 1, 1000]))
    elif defect == "unknown field":
        fields[draw(unknown_names)] = draw(json_values)
    elif defect == "type not text":
        fields["type"] = draw(not_text)
    else:
        other_types = st.sampled_from(["ack", "synced", "error", "chat.message", "chat.batch"])
        fields["type"] = draw(
            (other_types | any_text).filter(lambda t: t not in ("message", "history"))
        )
        code = ErrorCode.UNKNOWN_TYPE
    members = tuple(draw(st.permutations(list(fields.items()))))
    return frame(Obj(members), ascii_only=draw(st.booleans()), answers=[f"error:{code}"])


def history_verdict(value: Json, low: int) -> str:
    """Whether a seq or limit value is "ok", "bad" or "unclear" (docs/protocol.md is silent)."""
    if isinstance(value, Raw):
        value = json.loads(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "bad"
    if isinstance(value, float):
        # 5.0 is a whole number, though not a JSON integer: either answer is defensible.
        whole = math.isfinite(value) and value.is_integer() and value >= low
        return "unclear" if whole else "bad"
    if value < low:
        return "bad"
    # Past what the database holds: refused, or (a limit) capped, or an empty page.
    return "unclear" if value >= 2**63 else "ok"


history_values: st.SearchStrategy[Json] = mixed(
    (6, st.integers(0, 200)),
    (1, st.integers(-1, 2**63 - 1)),
    (1, st.sampled_from([2**63 - 1, 2**63, -(2**63)])),
    (1, st.integers()),
    (1, st.floats()),
    (1, ODD_NUMBERS),
    (1, json_values.filter(lambda v: v is not None)),
)


@st.composite
def history_requests(draw: st.DrawFn) -> Frame:
    """A history request, valid or not, and the answers its fields allow."""
    members: list[tuple[str, Json]] = [("type", "history")]
    verdicts: list[str] = []
    one, both, neither = [("before",), ("after",)], [("before", "after")], [()]
    names = draw(mixed((6, st.sampled_from(one)), (1, st.sampled_from(both + neither))))
    for name in names:
        value = draw(history_values)
        members.append((name, value))
        verdicts.append(history_verdict(value, 1 if name == "before" else 0))
    if len(names) != 1:
        verdicts.append("bad")  # not exactly one of before and after
    if draw(st.booleans()):
        limit = draw(st.none() | history_values)
        members.append(("limit", limit))
        # A null limit may mean "absent" (50) or be a value of the wrong type.
        verdicts.append("unclear" if limit is None else history_verdict(limit, 1))
    answers = {"history"}
    if "bad" in verdicts:
        answers = {"error:bad_history"}
    elif "unclear" in verdicts:
        answers.add("error:bad_history")
    if draw(st.integers(0, 3)) == 0:
        members.append((draw(unknown_names), draw(json_values)))
        answers = {"error:bad_frame"} | (answers - {"history"})
    members = draw(st.permutations(members))
    return frame(Obj(tuple(members)), ascii_only=draw(st.booleans()), answers=answers)


def _deep(depth: int, shape: str) -> Frame:
    nested = {
        "array": "[" * depth + "]" * depth,
        "object": '{"a":' * depth + "0" + "}" * depth,
        "message": '{"message":' + "[" * depth + "]" * depth + "}",
    }[shape]
    # Too deep for the parser is not JSON it can read; shallower, it is the wrong shape.
    return Frame(text=nested, answers=frozenset({"error:bad_json", "error:bad_frame"}))


def _many_digits(digits: int) -> Frame:
    # Python refuses integers of over 4,300 digits (a guard against quadratic parsing).
    text = '{"message":' + "9" * digits + "}"
    return Frame(text=text, answers=frozenset({"error:bad_json", "error:bad_frame"}))


def _padded_post(size: int) -> str:
    """A post frame of exactly `size` bytes whose message is far over the length limit."""
    head, tail = '{"message":"', '"}'
    return head + "x" * (size - len(head) - len(tail)) + tail


def _exactly_max(unit: str) -> Frame:
    """A frame of exactly MAX_FRAME_BYTES: the largest that must be answered, not closed."""
    if unit == "post":
        return Frame(
            text=_padded_post(MAX_FRAME_BYTES), answers=frozenset({"error:message_too_long"})
        )
    size = len(unit.encode())
    text = unit * (MAX_FRAME_BYTES // size) + "x" * (MAX_FRAME_BYTES % size)
    return Frame(text=text, answers=frozenset({"error:bad_json"}))


def _oversized(kind: str, over: int) -> Frame:
    """A frame `over` bytes past MAX_FRAME_BYTES: closed, not answered."""
    if kind == "binary":
        return Frame(data=b"x" * (MAX_FRAME_BYTES + over), answers=CLOSE)
    if kind == "post":
        return Frame(text=_padded_post(MAX_FRAME_BYTES + over), answers=CLOSE)
    size = len(kind.encode())
    return Frame(text=kind * (MAX_FRAME_BYTES // size + over), answers=CLOSE)


EMPTY = Frame(text="", answers=frozenset({"error:bad_json"}))
non_objects = st.builds(
    frame,
    json_values.filter(lambda v: not isinstance(v, Obj)),
    ascii_only=st.booleans(),
    answers=st.just(["error:bad_frame"]),
)
deep_frames = st.builds(
    _deep,
    st.integers(1, 100) | st.integers(900, 6000),
    st.sampled_from(["array", "object", "message"]),
)
binary_frames = st.builds(
    lambda data: Frame(data=data, answers=frozenset({"error:binary_not_supported"})),
    st.binary(max_size=32) | st.just(b"\x00" * MAX_FRAME_BYTES),
)
junk_frames = mixed(
    (1, st.just(EMPTY)),
    (2, non_objects),
    (1, st.builds(_many_digits, st.integers(4301, 6000))),
    (3, deep_frames),
    (1, binary_frames),
    (2, st.builds(_exactly_max, st.sampled_from(["x", "é", "€", "😀", "post"]))),
)
oversized_frames = st.builds(
    _oversized, st.sampled_from(["x", "😀", "post", "binary"]), st.integers(1, 3)
)

# Frames whose answer is known from docs/protocol.md.
known_frames = mixed(
    (3, valid_posts()), (3, refused_posts()), (2, history_requests()), (2, junk_frames)
)

# Frames that only must not hurt: any documented answer will do.
VALID_FRAMES: list[dict[str, Json]] = [
    {"type": "message", "message": "hi", "client_id": "c-1"},
    {"type": "history", "before": 5, "limit": 10},
    {"type": "history", "after": 0, "limit": 10},
]
# Values that break parsers, to put into any field of an otherwise valid frame.
NASTY: list[Json] = [None, True, 0, -1, 2**63, "", "\ud800", "\x00", [], Obj(())]
NASTY += [Raw(text) for text in ("NaN", "-Infinity", "1e400", "-0", "1" + "0" * 400)]


@st.composite
def spoiled_frames(draw: st.DrawFn) -> Frame:
    """A valid post or history request with one field, or a new one, set to a nasty value."""
    fields = dict(draw(st.sampled_from(VALID_FRAMES)))
    fields[draw(st.sampled_from(FIELDS))] = draw(st.sampled_from(NASTY))
    return frame(Obj(tuple(fields.items())), ascii_only=draw(st.booleans()), answers=None)


random_objects = st.builds(
    Obj,
    st.lists(
        st.tuples(
            st.sampled_from(FIELDS) | any_text,
            st.sampled_from(["message", "history"]) | json_values,
        ),
        max_size=4,
    ).map(tuple),
)
any_frames = mixed(
    (1, st.builds(lambda text: Frame(text=text), st.text(ANY_CHAR, max_size=40))),
    (1, st.builds(frame, random_objects, ascii_only=st.booleans(), answers=st.none())),
    (2, spoiled_frames()),
)


# --- the sockets of one example ------------------------------------------------------------


def _shape_fields(shape: Any) -> dict[str, tuple[type | tuple[type, ...], bool]]:
    """A frame TypedDict's fields (but `type`): the runtime type of each, and if it is required."""
    fields: dict[str, tuple[type | tuple[type, ...], bool]] = {}
    for name, hint in get_type_hints(shape, include_extras=True).items():
        required = get_origin(hint) is not NotRequired
        base = hint if required else get_args(hint)[0]
        runtime = get_origin(base) or base
        # JSON has one kind of number: a float field may arrive as 1.
        fields[name] = ((int, float) if runtime is float else runtime, required)
    del fields["type"]
    return fields


# Every server frame's shape, read from chat/protocol.py's TypedDicts.
SHAPES = {
    get_args(get_type_hints(shape)["type"])[0]: _shape_fields(shape)
    for shape in get_args(protocol.ServerFrame)
}


def check_shape(sent: dict[str, Any]) -> None:
    """A server frame is one of chat/protocol.py's shapes (extra fields are allowed)."""
    shown = f"{sent!r:.300}"
    assert sent.get("type") in SHAPES, f"the server sent a frame of unknown type: {shown}"
    for name, (runtime, required) in SHAPES[sent["type"]].items():
        if name in sent:
            assert isinstance(sent[name], runtime), f"`{name}` of the wrong type: {shown}"
        else:
            assert not required, f"`{name}` missing: {shown}"
    if sent["type"] == "error":
        assert sent["code"] in ERROR_CODES, f"undocumented error code: {shown}"
        assert sent["detail"], f"an error with an empty detail: {shown}"
    elif sent["type"] == "history":
        for message in sent["messages"]:
            assert isinstance(message, dict), f"history of non-objects: {shown}"
            check_shape(message)
            assert message["type"] == "message", f"history of non-messages: {shown}"


# Frames the room sends on its own schedule (who is present, who is typing).
SIDE_CHANNEL = frozenset({"presence", "typing"})


class ConsumerFailed(AssertionError):
    """A consumer's handler raised (its exception is the cause) instead of answering."""


class Peer:
    """A test's socket: every frame it is sent is checked against the protocol on arrival."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.close_code: int | None = None
        # The history sent on connecting, before `synced`.
        self.joined: list[dict[str, Any]] = []

    def raise_if_ended(self) -> None:
        """Fail, with the handler's exception as the cause, if the consumer has ended."""
        future = self.communicator.future
        if not future.done():
            return
        error = None if future.cancelled() else future.exception()
        if error is None:
            raise ConsumerFailed("the consumer ended without closing its socket")
        raise ConsumerFailed(f"a handler raised {type(error).__name__}") from error

    async def send(self, sent: Frame) -> None:
        """Send one frame (text or binary) as the server would receive it."""
        self.raise_if_ended()
        payload = {"text": sent.text} if sent.text is not None else {"bytes": sent.data}
        await self.communicator.send_input({"type": "websocket.receive", **payload})

    async def post(self, body: str, client_id: str) -> None:
        """Send a valid post."""
        text = json.dumps({"type": "message", "message": body, "client_id": client_id})
        await self.send(Frame(text=text))

    async def output(self) -> dict[str, Any]:
        """The next ASGI event the consumer sent, unchecked."""
        communicator = self.communicator
        getter = asyncio.ensure_future(communicator.output_queue.get())
        done, _ = await asyncio.wait(
            {getter, communicator.future},
            timeout=RECEIVE_TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if getter not in done:
            getter.cancel()
            self.raise_if_ended()
            raise AssertionError(f"nothing arrived within {RECEIVE_TIMEOUT} s")
        output: dict[str, Any] = getter.result()
        if output["type"] == "websocket.close":
            self.close_code = output.get("code", 1000)
        return output

    async def receive(self) -> dict[str, Any] | None:
        """The next frame, decoded and checked; None once the server closed the socket.

        Presence and typing frames are checked and passed over: they come on the room's own
        schedule, answers to no frame of this socket.
        """
        while True:
            sent = await self._receive_one()
            if sent is None or sent["type"] not in SIDE_CHANNEL:
                return sent

    async def _receive_one(self) -> dict[str, Any] | None:
        if self.close_code is not None:
            return None
        output = await self.output()
        if self.close_code is not None:
            code = self.close_code
            assert code in APPLICATION_CLOSE_CODES, f"closed with {code}, not a 4xxx code"
            # A handler of this socket failed: no input may ever cause it.
            assert code != protocol.CLOSE_SERVER_ERROR, f"closed with {code}: a handler failed"
            return None
        assert output["type"] == "websocket.send", f"unexpected ASGI event {output!r:.300}"
        text = output.get("text")
        assert isinstance(text, str), f"the server sent a binary frame: {output!r:.300}"
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise AssertionError(
                f"the server sent text with no UTF-8 form: {text!r:.300}"
            ) from None
        sent = json.loads(text)
        assert isinstance(sent, dict), f"the server sent a non-object: {text!r:.300}"
        check_shape(sent)
        return sent

    async def skip_until_settled(self, client_id: str | None) -> dict[str, Any] | None:
        """Skip, unchecked, to the ack or error of post `client_id`; None if the socket closes.

        For the attacker's socket in tests of other properties: what it is sent is property 1's.
        """
        while self.close_code is None:
            output = await self.output()
            text = output.get("text") or ""
            if client_id is not None and client_id in text:
                sent = json.loads(text)
                if sent["type"] in ("ack", "error") and sent.get("client_id") == client_id:
                    return dict(sent)
        return None

    async def until_settled(
        self, client_id: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The frames before the ack (or error) of post `client_id`, and that answer (None if
        the socket closed first)."""
        before: list[dict[str, Any]] = []
        while (sent := await self.receive()) is not None:
            if sent["type"] in ("ack", "error") and sent.get("client_id") == client_id:
                return before, sent
            before.append(sent)
        return before, None


class Sockets:
    """The sockets of one example, in rooms of its own; all disconnected at the end."""

    def __init__(self) -> None:
        self.opened: list[WebsocketCommunicator] = []
        self.tag = uuid.uuid4().hex[:12]

    def room(self, name: str) -> str:
        """A room of this example's own."""
        return f"fuzz-{self.tag}-{name}"

    async def open(self, room: str) -> Peer:
        """A socket in `room`, connected with ?sync=1 and read up to `synced`."""
        communicator = WebsocketCommunicator(
            application, f"/ws/chat/{room}/?sync=1", headers=[ORIGIN]
        )
        self.opened.append(communicator)
        connected, _ = await communicator.connect(timeout=RECEIVE_TIMEOUT)
        assert connected, f"handshake to room {room!r} was refused"
        peer = Peer(communicator)
        while (sent := await peer.receive()) is not None and sent["type"] != "synced":
            peer.joined.append(sent)
        assert sent is not None, f"closed ({peer.close_code}) before synced"
        return peer

    async def close(self) -> None:
        """Disconnect every socket (a consumer that raised is reported where it is seen)."""
        for communicator in self.opened:
            future = communicator.future
            if future.done():
                # Retrieved, or asyncio logs it again; where it matters it was reported.
                if not future.cancelled():
                    future.exception()
            else:
                await communicator.disconnect(timeout=RECEIVE_TIMEOUT)


Scenario = Callable[[Sockets], Awaitable[None]]


def run_examples(loop: asyncio.AbstractEventLoop) -> Callable[[Scenario], None]:
    """Run a scenario, from Hypothesis' worker thread, on the test's event loop."""

    async def in_sockets(scenario: Scenario) -> None:
        sockets = Sockets()
        try:
            await scenario(sockets)
        finally:
            # A consumer that raised is property 1's finding; here it only must not linger.
            await sockets.close()

    def run(scenario: Scenario) -> None:
        asyncio.run_coroutine_threadsafe(in_sockets(scenario), loop).result()

    return run


@database_sync_to_async
def stored(room: str) -> list[tuple[int, str, str | None]]:
    """A room's messages: (seq, body, client_id), in sequence order."""
    rows = Message.objects.filter(room__name=room).order_by("seq")
    return list(rows.values_list("seq", "body", "client_id"))


def stored_once(posts: Iterable[Post]) -> list[tuple[str, str | None]]:
    """What valid posts store, in order: a resent client_id stores nothing new."""
    seen: set[str] = set()
    rows = []
    for post in posts:
        if post.client_id is None or post.client_id not in seen:
            rows.append((post.body, post.client_id))
        if post.client_id is not None:
            seen.add(post.client_id)
    return rows


# --- 1. every frame gets a documented answer -------------------------------------------------


async def answer_each_frame(sockets: Sockets, frames: list[Frame]) -> None:
    """Send the frames one at a time, each followed by a valid post that marks its end."""
    attacker = await sockets.open(sockets.room("a"))
    for index, sent in enumerate(frames):
        await attacker.send(sent)
        # Frames are answered in order, and posts acknowledged in order: whatever arrives
        # before the marker's ack, other than broadcasts, is this frame's answer.
        marker = f"marker-{sockets.tag}-{index}"
        await attacker.post(f"marker {index}", marker)
        before, settled = await attacker.until_settled(marker)
        if settled is not None:
            assert settled["type"] == "ack", f"a valid post after {sent!r} was refused: {settled}"
        answers = [got for got in before if got["type"] != "message"]
        assert len(answers) <= 1, f"{sent!r} got more than one answer: {answers}"
        if attacker.close_code is not None:
            answer = "close"
        elif answers:
            got = answers[0]
            answer = f"error:{got['code']}" if got["type"] == "error" else got["type"]
        else:
            answer = "none"
        if sent.answers is not None:
            assert answer in sent.answers, f"{sent!r} was answered {answer}: {answers}"
        if sent.post is not None and sent.post.client_id is not None:
            assert answers[0]["client_id"] == sent.post.client_id
        if answer == "close":
            return


async def test_every_frame_gets_a_documented_answer(layer: str) -> None:
    """Property 1: an error frame, a reply, or a 4xxx close (never 4011); nothing raises."""
    run = run_examples(asyncio.get_running_loop())

    @settings(FUZZ, max_examples=200)
    @given(
        frames=st.lists(
            mixed((10, known_frames), (3, any_frames), (1, oversized_frames)), max_size=10
        )
    )
    def attack(frames: list[Frame]) -> None:
        run(lambda sockets: answer_each_frame(sockets, frames))

    # Hypothesis calls synchronous tests: it runs in a thread while this loop runs the examples.
    await asyncio.to_thread(attack)


# --- 2. no other socket's post fails ---------------------------------------------------------

# One step of the attack: the attacker's frame, then that many posts from the bystander in
# its room and from the one in another room, then (if True) a turn for the event loop, which
# moves the boundaries of the group-commit batches.
Step = tuple[Frame, int, int, bool]


async def expect_all_acknowledged_and_delivered(
    bystander: Peer, room: str, posted: list[tuple[str, str]]
) -> None:
    """Every post acknowledged once, in order; every stored message of the room once, in order."""
    last = f"last-{uuid.uuid4().hex[:8]}"
    await bystander.post("last", last)
    posted = [*posted, (last, "last")]
    acks: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    while not messages or messages[-1].get("client_id") != last:
        got = await bystander.receive()
        assert got is not None, f"a bystander was closed with {bystander.close_code}"
        assert got["type"] != "error", f"a bystander's frame was refused: {got}"
        (acks if got["type"] == "ack" else messages).append(got)
    assert [ack["client_id"] for ack in acks] == [client_id for client_id, _ in posted]
    seqs = [message["seq"] for message in messages]
    assert seqs == list(range(1, len(seqs) + 1)), f"a bystander got seqs {seqs}"
    rows = await stored(room)
    assert [(seq, body) for seq, body, _ in rows] == [(m["seq"], m["message"]) for m in messages]
    mine = {message.get("client_id"): message for message in messages}
    for ack, (client_id, body) in zip(acks, posted, strict=True):
        assert (mine[client_id]["seq"], mine[client_id]["message"]) == (ack["seq"], body)


async def end_of_attack(attacker: Peer, marker: str, last: Frame | None) -> dict[str, Any] | None:
    """Wait until every frame the attacker sent is handled; the marker post's answer, if sent.

    Frames are handled in order, so either the marker post, sent after them, has its answer
    or `last` (an oversized frame) has closed the socket. After a close nothing more is sent:
    the server would drop it, and the marker would land after the bystanders' last posts.
    """
    await attacker.send(last or Frame(text=json.dumps({"message": "marker", "client_id": marker})))
    return await attacker.skip_until_settled(None if last else marker)


async def bystanders_keep_posting(sockets: Sockets, steps: list[Step], last: Frame | None) -> None:
    """The attacker's frames and two bystanders' posts, interleaved, none of them awaited."""
    room, other = sockets.room("a"), sockets.room("b")
    attacker, neighbour, stranger = [await sockets.open(name) for name in (room, room, other)]
    posted: dict[Peer, list[tuple[str, str]]] = {neighbour: [], stranger: []}
    # A handler that raises is property 1's finding: here only the bystanders matter.
    with contextlib.suppress(ConsumerFailed):
        for index, (sent, near, far, pause) in enumerate(steps):
            await attacker.send(sent)
            for bystander, count in ((neighbour, near), (stranger, far)):
                for n in range(count):
                    client_id, body = f"{index}-{n}", f"bystander post {index}.{n}"
                    await bystander.post(body, client_id)
                    posted[bystander].append((client_id, body))
            if pause:
                await asyncio.sleep(0)
        await end_of_attack(attacker, f"marker-{sockets.tag}", last)
    await expect_all_acknowledged_and_delivered(neighbour, room, posted[neighbour])
    await expect_all_acknowledged_and_delivered(stranger, other, posted[stranger])


async def test_no_other_socket_post_fails(layer: str) -> None:
    """Property 2: bystanders' posts, in the attacker's batches, are all stored and delivered."""
    run = run_examples(asyncio.get_running_loop())
    steps = st.tuples(
        mixed((2, valid_posts()), (2, refused_posts()), (2, known_frames), (1, any_frames)),
        st.integers(0, 2),
        st.integers(0, 2),
        st.booleans(),
    )

    @settings(FUZZ, max_examples=100)
    @given(steps=st.lists(steps, max_size=12), last=st.none() | oversized_frames)
    def attack(steps: list[Step], last: Frame | None) -> None:
        run(lambda sockets: bystanders_keep_posting(sockets, steps, last))

    await asyncio.to_thread(attack)


# --- 3. the room keeps working ---------------------------------------------------------------


async def room_keeps_working(sockets: Sockets, frames: list[Frame], last: Frame | None) -> None:
    """After the attack a newcomer joins, posts and pages back; the database holds exactly
    the attacker's valid posts."""
    room = sockets.room("a")
    attacker = await sockets.open(room)
    for sent in frames:
        await attacker.send(sent)
    posts = [sent.post for sent in frames if sent.post is not None]
    # A consumer that raised leaves the attacker's later posts unstored: that fails here.
    marker = f"marker-{sockets.tag}"
    answer = await end_of_attack(attacker, marker, last)
    if last is None:
        assert answer is not None, f"the attacker was closed ({attacker.close_code})"
        assert answer["type"] == "ack", f"the attacker's valid post was refused: {answer}"
        posts.append(Post("marker", marker))

    newcomer = await sockets.open(room)
    mine = f"newcomer-{sockets.tag}"
    await newcomer.post("newcomer", mine)
    later, ack = await newcomer.until_settled(mine)
    assert ack is not None, f"the newcomer was closed ({newcomer.close_code})"
    assert ack["type"] == "ack", f"the newcomer's post was refused: {ack}"
    seen = [*newcomer.joined, *later]
    while not seen or seen[-1]["seq"] < ack["seq"]:
        got = await newcomer.receive()
        assert got is not None, f"the newcomer was closed with {newcomer.close_code}"
        seen.append(got)
    assert all(got["type"] == "message" for got in seen), seen
    seqs = [got["seq"] for got in seen]
    assert seqs == list(range(seqs[0], ack["seq"] + 1)), f"the newcomer got seqs {seqs}"
    assert seqs[0] == 1 or len(seqs) > HISTORY_ON_JOIN, f"the newcomer's history: {seqs}"

    await newcomer.send(Frame(text=json.dumps({"type": "history", "before": ack["seq"] + 1})))
    page = await newcomer.receive()
    assert page is not None
    assert page["type"] == "history", page
    paged = [got["seq"] for got in page["messages"]]
    assert paged, page
    assert paged == list(range(paged[0], ack["seq"] + 1)), paged

    rows = await stored(room)
    assert [seq for seq, _, _ in rows] == list(range(1, ack["seq"] + 1))
    by_seq = {seq: body for seq, body, _ in rows}
    for got in [*seen, *page["messages"]]:
        assert got["message"] == by_seq[got["seq"]], got
    attackers = [(body, client_id) for _, body, client_id in rows if client_id != mine]
    assert attackers == stored_once(posts), "the attacker's valid posts, stored once each"


async def test_the_room_keeps_working(layer: str) -> None:
    """Property 3: a newcomer joins, posts and pages back; exactly the valid posts are stored."""
    run = run_examples(asyncio.get_running_loop())

    @settings(FUZZ, max_examples=100)
    @given(frames=st.lists(known_frames, max_size=12), last=st.none() | oversized_frames)
    def attack(frames: list[Frame], last: Frame | None) -> None:
        run(lambda sockets: room_keeps_working(sockets, frames, last))

    await asyncio.to_thread(attack)
