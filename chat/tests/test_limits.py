"""Rate limits and caps in the socket path: the flooder is refused, and only the flooder.

Each test runs with limits in memory and in Redis (the `layer` fixture's two runs); the limits
module itself, across processes and with Redis down, is tested in test_throttle.py, and two
daphne processes sharing limits in test_hostile_server.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
from channels.testing import WebsocketCommunicator

from chat import protocol
from chat.testing.ws import ORIGIN, receive
from mysite.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True)]

Open = Callable[..., Awaitable[WebsocketCommunicator]]
ROOMY = "1000/second"


@pytest.fixture
def limits(settings: Any, layer: str, request: pytest.FixtureRequest) -> None:
    """Limits on, generous unless a test tightens one; in Redis on the Redis run."""
    settings.CHAT_LIMITS_ENABLED = True
    if layer == "redis":
        url = request.getfixturevalue("redis_url")
        redis.Redis.from_url(url).flushdb()
        settings.CHAT_LIMITS_STORAGE = url
    else:
        settings.CHAT_LIMITS_STORAGE = "memory://"
    for name in ("POSTS", "HISTORY"):
        for per in ("PERSON", "ADDRESS"):
            setattr(settings, f"CHAT_LIMIT_{name}_PER_{per}", ROOMY)
    settings.CHAT_LIMIT_HANDSHAKES_PER_ADDRESS = ROOMY
    settings.CHAT_LIMIT_NEW_ROOMS_PER_ADDRESS = ROOMY
    settings.CHAT_MAX_SOCKETS_PER_ADDRESS = 100
    settings.CHAT_MAX_SOCKETS_PER_PERSON = 100


@pytest.fixture
async def open_socket(limits: None) -> AsyncIterator[Open]:
    """Open a socket to a room from an address; all are disconnected at the end."""
    opened: list[WebsocketCommunicator] = []

    async def open_room(room: str, address: str = "203.0.113.7") -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(application, f"/ws/chat/{room}/", headers=[ORIGIN])
        # The same dict the application was handed, before it has run: as daphne fills it.
        communicator.scope["client"] = (address, 50000)
        connected, _ = await communicator.connect()
        assert connected
        opened.append(communicator)
        return communicator

    yield open_room
    for communicator in opened:
        await communicator.disconnect()


async def outcomes_of(socket: WebsocketCommunicator, count: int, prefix: str) -> list[str]:
    """Post `count` messages; return, in order, "ack" or the error code of each."""
    for n in range(count):
        await socket.send_json_to({"message": f"{prefix}{n}", "client_id": f"{prefix}{n}"})
    outcomes: dict[str, str] = {}
    while len(outcomes) < count:
        frame = await receive(socket)
        if frame["type"] == "error":
            assert frame["retry_after"] > 0
            outcomes[frame["client_id"]] = frame["code"]
        elif frame["type"] == "ack":
            outcomes[frame["client_id"]] = "ack"
    return [outcomes[f"{prefix}{n}"] for n in range(count)]


async def test_posts_past_a_persons_rate_are_refused_to_that_person_only(
    open_socket: Open, settings: Any
) -> None:
    settings.CHAT_LIMIT_POSTS_PER_PERSON = "3/minute"
    flooder = await open_socket("lobby")
    bystander = await open_socket("lobby")  # the same address, another guest

    assert await outcomes_of(flooder, 5, "f") == ["ack"] * 3 + ["rate_limited"] * 2
    assert await outcomes_of(bystander, 3, "b") == ["ack"] * 3


async def test_edits_and_deletes_count_against_the_posts_rate(
    open_socket: Open, settings: Any
) -> None:
    """Changes take seqs and go through the shared group commit like posts: an edit flood is
    refused to its sender alone, with the same limit."""
    settings.CHAT_LIMIT_POSTS_PER_PERSON = "3/minute"
    flooder = await open_socket("lobby")
    bystander = await open_socket("lobby")
    assert await outcomes_of(flooder, 1, "p") == ["ack"]
    for n in range(3):
        await flooder.send_json_to(
            {"type": "edit", "seq": 1, "message": f"v{n}", "client_id": f"e{n}"}
        )
    await flooder.send_json_to({"type": "delete", "seq": 1, "client_id": "d"})
    outcomes: dict[str, str] = {}
    while len(outcomes) < 4:
        frame = await receive(flooder)
        if frame["type"] in {"ack", "error"}:
            outcomes[frame["client_id"]] = frame.get("code", "ack")
    assert [outcomes[key] for key in ("e0", "e1", "e2", "d")] == [
        "ack",
        "ack",
        "rate_limited",
        "rate_limited",
    ]
    assert await outcomes_of(bystander, 3, "b") == ["ack"] * 3


async def test_posts_past_an_addresss_rate_are_refused_whatever_the_guest_name(
    open_socket: Open, settings: Any
) -> None:
    settings.CHAT_LIMIT_POSTS_PER_ADDRESS = "4/minute"
    # A script that takes a fresh guest name for every socket.
    sockets = [await open_socket("lobby") for _ in range(3)]
    outcomes = [o for n, s in enumerate(sockets) for o in await outcomes_of(s, 2, f"s{n}-")]
    assert outcomes == ["ack"] * 4 + ["rate_limited"] * 2
    elsewhere = await open_socket("lobby", address="198.51.100.1")
    assert await outcomes_of(elsewhere, 2, "e") == ["ack", "ack"]


async def test_a_socket_that_keeps_flooding_is_closed_with_4429(
    open_socket: Open, settings: Any
) -> None:
    settings.CHAT_LIMIT_POSTS_PER_PERSON = "1/minute"
    flooder = await open_socket("lobby")
    bystander = await open_socket("lobby")
    for n in range(40):
        await flooder.send_json_to({"message": f"spam {n}"})
    frames: list[dict[str, Any]] = []
    while True:
        output = await flooder.receive_output(timeout=3)
        if output["type"] == "websocket.close":
            assert output["code"] == protocol.CLOSE_RATE_LIMITED
            break
        frames.append(output)
    # One stored, then refusals until the flood guard gave up on the socket.
    assert 1 < len(frames) < 40
    assert await outcomes_of(bystander, 1, "b") == ["ack"]


async def test_history_requests_past_the_rate_are_refused(open_socket: Open, settings: Any) -> None:
    settings.CHAT_LIMIT_HISTORY_PER_PERSON = "2/minute"
    reader = await open_socket("lobby")
    for _ in range(3):
        await reader.send_json_to({"type": "history", "before": 10})
    replies = [(await receive(reader))["type"] for _ in range(3)]
    assert replies == ["history", "history", "error"]


async def test_new_rooms_past_the_rate_are_refused_but_existing_rooms_take_posts(
    open_socket: Open, settings: Any
) -> None:
    settings.CHAT_LIMIT_NEW_ROOMS_PER_ADDRESS = "2/minute"
    outcomes = []
    for n in range(3):
        socket = await open_socket(f"new-{n}")
        outcomes += await outcomes_of(socket, 1, f"r{n}-")
    assert outcomes == ["ack", "ack", "rate_limited"]
    again = await open_socket("new-0")
    assert await outcomes_of(again, 2, "again") == ["ack", "ack"]


async def test_sockets_past_the_per_address_cap_are_refused_until_one_closes(
    open_socket: Open, settings: Any
) -> None:
    settings.CHAT_MAX_SOCKETS_PER_ADDRESS = 3
    sockets = [await open_socket("lobby") for _ in range(3)]
    refused = await open_socket("lobby")
    error = await receive(refused)
    assert (error["code"], error["retry_after"] > 0) == ("rate_limited", True)
    assert "sockets_per_address" in error["detail"]
    assert await refused.receive_output(timeout=3) == {
        "type": "websocket.close",
        "code": protocol.CLOSE_RATE_LIMITED,
    }
    other_address = await open_socket("lobby", address="198.51.100.1")
    assert await outcomes_of(other_address, 1, "o") == ["ack"]

    await sockets[0].disconnect()
    await sockets[0].wait()
    admitted = await open_socket("lobby")
    assert await outcomes_of(admitted, 1, "a") == ["ack"]


async def test_a_handshake_flood_is_refused_before_it_costs_the_database_a_read(
    limits: None, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the rate, a handshake with a session cookie costs no session or access read; the
    rate is the flooding address's alone."""
    import channels.auth

    from chat import access

    reads: list[str] = []
    real_get_user, real_may_enter = channels.auth.get_user, access.may_enter

    async def get_user(scope: Any) -> Any:
        reads.append("session")
        return await real_get_user(scope)

    def may_enter(*args: Any) -> Any:
        reads.append("access")
        return real_may_enter(*args)

    monkeypatch.setattr(channels.auth, "get_user", get_user)
    monkeypatch.setattr(access, "may_enter", may_enter)
    settings.CHAT_LIMIT_HANDSHAKES_PER_ADDRESS = "2/minute"
    cookie = (b"cookie", b"sessionid=" + b"k" * 32)  # a session key's shape, no session

    async def handshake(address: str) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(
            application, "/ws/chat/lobby/", headers=[ORIGIN, cookie]
        )
        communicator.scope["client"] = (address, 50000)
        assert (await communicator.connect())[0]
        return communicator

    admitted = [await handshake("203.0.113.9") for _ in range(2)]
    assert reads == ["session", "access"] * 2
    flood = [await handshake("203.0.113.9") for _ in range(5)]
    for refused in flood:
        assert (await receive(refused))["code"] == "rate_limited"
        assert (await refused.receive_output(timeout=3))["code"] == protocol.CLOSE_RATE_LIMITED
    assert reads == ["session", "access"] * 2
    other = await handshake("198.51.100.9")
    assert await outcomes_of(other, 1, "o") == ["ack"]
    for communicator in [*admitted, *flood, other]:
        await communicator.disconnect()


async def test_handshakes_past_the_rate_are_refused(open_socket: Open, settings: Any) -> None:
    settings.CHAT_LIMIT_HANDSHAKES_PER_ADDRESS = "3/minute"
    for _ in range(3):
        await open_socket("lobby")
    refused = await open_socket("lobby")
    error = await receive(refused)
    assert error["code"] == "rate_limited"
    assert "handshakes_per_address" in error["detail"]
