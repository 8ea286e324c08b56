"""Hostile clients against a real daphne on its own Redis: one harms no one but itself.

Each test replays a finding of the security review the way the attacker played it, and
measures what it cost everyone else: the server's memory, a bystander's acks and deliveries,
the Redis subscriptions the process keeps. Rate limits are off (`CHAT_LIMITS=off`), so what is
tested is the structure, not a limit that happens to come first. The last two tests are defects
found while writing the others."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State
from websockets.typing import Origin

from chat.fanout import IDLE_ROOM_LINGER, RECONCILE_INTERVAL
from chat.rooms import group_name
from chat.testing.redis_server import RedisServer
from chat.testing.server import DaphneServer
from chat.transport import SLOW_READER_LIMIT

pytestmark = [pytest.mark.redis, pytest.mark.timeout(300)]

MIB = 1024 * 1024
# The longest message there is, in a 3-byte character: 12,000 bytes of UTF-8.
LONG = "€" * 4000
FRAME_LIMIT = 64 * 1024
# Where channels-redis's pub/sub layer (prefix "asgi") carries a group.
GROUP_CHANNEL = "asgi__group__{}"

Frame = dict[str, Any]


@pytest.fixture
def server(own_redis: RedisServer) -> Iterator[DaphneServer]:
    """As conftest's `server`, with rate limits off."""
    daphne = DaphneServer(redis_url=own_redis.url, extra_env={"CHAT_LIMITS": "off"})
    daphne.migrate().start()
    yield daphne
    daphne.stop()


async def connect(
    server: DaphneServer,
    room: str,
    query: str = "",
    *,
    max_size: int | None = None,
    close_timeout: float = 10,
    narrow: bool = False,
) -> ClientConnection:
    """A socket to a room.

    `narrow`: as over a real network (segments of 1400 bytes, not loopback's 64 KB), with a
    4 KB receive buffer from the first byte: the server's kernel then buffers ~100 KB for it,
    not megabytes, and what it cannot take waits in daphne.
    """
    sock = None
    if narrow:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
    return await websockets.connect(
        f"{server.ws_url}/ws/chat/{room}/{query}",
        origin=Origin(server.http_url),
        max_size=max_size,
        close_timeout=close_timeout,
        sock=sock,
    )


def post(text: str, client_id: str) -> str:
    return json.dumps({"message": text, "client_id": client_id})


class Client:
    """A socket whose frames a task reads as they come, each with the time it arrived."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[float, Frame]] = []
        self.counts: Counter[str] = Counter()
        self.changed = asyncio.Event()
        self.closed = False
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: DaphneServer, room: str, query: str = "?sync=1") -> Client:
        client = cls(await connect(server, room, query))
        if "sync" in query or "after" in query:
            await client.wait_until(lambda: bool(client.of_type("synced")), 10, "synced")
        return client

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                frame = json.loads(raw)
                self.frames.append((time.monotonic(), frame))
                self.counts[frame["type"]] += 1
                self.changed.set()
        self.closed = True
        self.changed.set()

    def count(self, kind: str) -> int:
        """Frames of a kind that have arrived."""
        return self.counts[kind]

    def has(self, kind: str, count: int) -> bool:
        """True once `count` frames of a kind have arrived."""
        return self.counts[kind] >= count

    def of_type(self, kind: str) -> list[Frame]:
        return [frame for _, frame in self.frames if frame["type"] == kind]

    def arrivals(self, kind: str) -> dict[str, float]:
        """When each frame of a kind carrying a client_id arrived, by client_id (the first)."""
        times: dict[str, float] = {}
        for at, frame in self.frames:
            if frame["type"] == kind and "client_id" in frame:
                times.setdefault(frame["client_id"], at)
        return times

    def has_answer(self, client_id: str) -> bool:
        """True once a post's ack and its broadcast have both arrived."""
        return client_id in self.arrivals("ack") and client_id in self.arrivals("message")

    def answered_at(self, client_id: str) -> float:
        """When the later of a post's ack and its broadcast arrived."""
        return max(self.arrivals("ack")[client_id], self.arrivals("message")[client_id])

    async def wait_until(self, condition: Callable[[], bool], within: float, what: str) -> None:
        """Wait for `condition`; fail if the time is up or the socket closes without it."""
        try:
            async with asyncio.timeout(within):
                while True:
                    self.changed.clear()
                    if condition():
                        return
                    if self.closed:
                        raise AssertionError(
                            f"closed ({self.ws.close_code}) before {what}; last frames: "
                            f"{[frame for _, frame in self.frames[-3:]]}"
                        )
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"waited {within} s in vain for {what}") from None

    async def close(self) -> None:
        await self.ws.close()
        await self.reader


async def fill_room(server: DaphneServer, room: str, texts: list[str]) -> None:
    """Post `texts` to a new room and wait until every one is stored and broadcast."""
    poster = await Client.open(server, room)
    for n, text in enumerate(texts):
        await poster.ws.send(post(text, f"fill-{n}"))
    await poster.wait_until(
        lambda: len(poster.of_type("message")) == len(texts), 20, "every broadcast"
    )
    assert len(poster.of_type("ack")) == len(texts)
    await poster.close()


def stop_reading(ws: ClientConnection) -> None:
    """Read nothing more, with a tiny receive window, so the server's buffer fills."""
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ws.transport.pause_reading()


async def test_history_requests_of_a_client_that_never_reads_stay_under_its_limit(
    server: DaphneServer,
) -> None:
    """Finding: 150 history requests (7.9 KB) from a client that never reads grew daphne by
    137 MB: the replies went out past the slow-reader limit, into the server's memory."""
    await fill_room(server, "archive", [LONG] * 50)
    slow = await connect(server, "archive", "?after=50")
    assert json.loads(await slow.recv()) == {"type": "synced", "last_seq": 50}
    stop_reading(slow)
    neighbour = await Client.open(server, "archive", "?after=50")
    elsewhere = await Client.open(server, "elsewhere")
    before = server.rss()
    samples = [before]

    # Each asks for the whole room, 600 KB of messages: 90 MB for the 150 of them.
    request = json.dumps({"type": "history", "before": 51, "limit": 100})
    for _ in range(150):
        await slow.send(request)
    # A socket's frames are handled in order: this post is broadcast once all 150 are answered.
    await slow.send(post("after my history requests", "slow-last"))
    assert 150 * 50 * len(LONG.encode()) > 64 * SLOW_READER_LIMIT
    # The server goes on for others (nobody posts in the slow socket's room yet: a broadcast
    # there would find its buffer full and drop it, and with it what it holds).
    await elsewhere.ws.send(post("in another room", "elsewhere-1"))
    await elsewhere.wait_until(lambda: bool(elsewhere.of_type("ack")), 5, "the ack elsewhere")

    # Until the server has done all it will with the requests: answered them all (the slow
    # socket's post is broadcast), or its memory stayed put for a second and a half.
    async with asyncio.timeout(30):
        while "slow-last" not in neighbour.arrivals("message"):
            samples.append(server.rss())
            if len(samples) > 15 and max(samples[-15:]) - min(samples[-15:]) < MIB:
                break
            await asyncio.sleep(0.1)
    samples.append(server.rss())
    growth = max(samples) - before
    assert growth < 16 * MIB, f"daphne grew by {growth / MIB:.1f} MiB"

    # The room goes on for everyone else, at once.
    delays: list[float] = []
    for n in range(20):
        client_id = f"neighbour-{n}"
        sent = time.monotonic()
        await neighbour.ws.send(post(f"still here {n}", client_id))
        await neighbour.wait_until(
            functools.partial(neighbour.has_answer, client_id), 5, f"the echo of {client_id}"
        )
        delays.append(neighbour.answered_at(client_id) - sent)
    assert max(delays) < 1.0, f"the neighbour's posts took up to {max(delays):.2f} s"
    print(
        f"RSS growth {growth / MIB:.1f} MiB; the neighbour's posts acked and broadcast in "
        f"at most {max(delays) * 1000:.0f} ms"
    )

    slow.transport.abort()
    for client in (neighbour, elsewhere):
        await client.close()


async def test_paging_back_through_long_messages_keeps_every_frame_under_the_limit(
    server: DaphneServer,
) -> None:
    """Finding: on 50 long messages, one `history` reply was 600 KB; under a 64 KiB frame
    limit (daphne's `--websocket-max-message-size`, or a client's) that closes the socket."""
    await fill_room(server, "long-read", [f"{n} {LONG[:-10]}" for n in range(1, 51)])
    # A client that holds the room's latest position and scrolls up, refusing frames over 64 KiB.
    ws = await connect(server, "long-read", "?after=50", max_size=FRAME_LIMIT)
    assert json.loads(await ws.recv()) == {"type": "synced", "last_seq": 50}
    held: list[Frame] = []
    before, pages = 51, 0
    while True:
        await ws.send(json.dumps({"type": "history", "before": before, "limit": 50}))
        raw = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(raw, str)
        assert len(raw.encode()) <= FRAME_LIMIT
        page: list[Frame] = json.loads(raw)["messages"]
        if not page:
            break
        pages += 1
        seqs = [message["seq"] for message in page]
        # The newest messages before `before`, in order, with nothing skipped.
        assert seqs == list(range(before - len(page), before))
        held = page + held
        before = seqs[0]
    assert [message["seq"] for message in held] == list(range(1, 51))
    assert [message["message"] for message in held] == [f"{n} {LONG[:-10]}" for n in range(1, 51)]
    assert pages > 5  # the room did not fit in one frame: the replies were cut, not refused
    assert ws.state is State.OPEN
    await ws.close()
    assert ws.close_code == 1000


async def subscribers(client: redis.asyncio.Redis, rooms: list[str]) -> dict[str, int]:
    """How many subscribers each room's group has in Redis (this server's hub: 0 or 1)."""
    counts = await client.pubsub_numsub(*(GROUP_CHANNEL.format(group_name(r)) for r in rooms))
    return {room: int(count) for room, (_, count) in zip(rooms, counts, strict=True)}


@pytest.fixture
async def redis_client(own_redis: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


async def test_sockets_that_break_the_parser_or_the_frame_limit_leave_their_rooms(
    server: DaphneServer, redis_client: redis.asyncio.Redis
) -> None:
    """Finding: JSON nested 3,000 deep (RecursionError) and a frame over 64 KiB (close(1009),
    which autobahn refuses) crashed the consumer before disconnect(): the hub kept the dead
    socket, and the process stayed subscribed to the room's group forever (50 of 50 rooms)."""
    nested_rooms = [f"nested-{n}" for n in range(25)]
    big_rooms = [f"big-{n}" for n in range(25)]
    rooms = nested_rooms + big_rooms
    clients = await asyncio.gather(*(Client.open(server, room) for room in rooms))
    # While a socket is in a room, its process is subscribed to the room's group.
    assert await subscribers(redis_client, rooms) == dict.fromkeys(rooms, 1)

    async def send_nested(client: Client) -> None:
        await client.ws.send("[" * 3000 + "]" * 3000)
        await client.wait_until(lambda: bool(client.of_type("error")), 10, "an error frame")
        assert [frame["code"] for frame in client.of_type("error")] == ["bad_json"]
        # Still open and answering.
        await client.ws.send(json.dumps({"type": "history", "after": 0, "limit": 1}))
        await client.wait_until(lambda: bool(client.of_type("history")), 10, "a history reply")
        await client.close()
        assert client.ws.close_code == 1000

    async def send_big(client: Client) -> None:
        await client.ws.send("x" * 70_000)
        await client.wait_until(lambda: client.closed, 10, "the close")
        assert client.ws.close_code == 4009

    outcomes = await asyncio.gather(
        *(send_nested(client) for client in clients[:25]),
        *(send_big(client) for client in clients[25:]),
        return_exceptions=True,
    )
    for client in clients:
        await client.close()  # if a check above failed before it did

    # Every socket is gone: after the idle linger, the next reconcile leaves every group.
    left_at = time.monotonic()
    deadline = left_at + IDLE_ROOM_LINGER + 3 * RECONCILE_INTERVAL + 5
    while (still := await subscribers(redis_client, rooms)) != dict.fromkeys(rooms, 0):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    leaked = sorted(room for room, count in still.items() if count)
    failed = [(room, outcome) for room, outcome in zip(rooms, outcomes, strict=True) if outcome]
    report = (
        f"after {time.monotonic() - left_at:.0f} s, still subscribed to {len(leaked)} of 50 "
        f"rooms ({leaked[:3]}...); {len(failed)} sockets were answered wrongly: {failed[:2]}"
    )
    assert not leaked, report
    assert not failed, report
    print(f"all 50 groups left {time.monotonic() - left_at:.1f} s after the sockets closed")


async def test_posters_that_hang_up_with_acks_pending_do_not_stop_the_writer(
    server: DaphneServer,
) -> None:
    """Finding: an ack for a socket that had sent Close raised Disconnected and ended the
    writer task: the rest of its batch was never acknowledged or published (1,427 of 1,500
    posts of a user in another room unanswered)."""
    # The attackers' room: joining it queues 600 KB of history. A client on a real network
    # (MSS 1400) that never reads takes only ~100 KB of it into the kernel's buffers; the rest
    # waits in daphne, so after its Close the connection lingers, and its acks are refused
    # (autobahn's Disconnected) until the TCP connection is gone.
    await fill_room(server, "hang-up", [LONG] * 50)
    bystander = await Client.open(server, "steady")
    client_ids = [f"b-{n}" for n in range(1500)]

    async def hang_up(round_: int) -> None:
        attacker = await connect(server, "hang-up", close_timeout=0.3, narrow=True)
        attacker.transport.pause_reading()
        for n in range(50):
            await attacker.send(post(LONG, f"h-{round_}-{n}"))
        # Its posts are handled once its Close arrives. (It gives up on the server's answer
        # soon: that would come after the history.)
        await attacker.close()

    async def bystander_posts(first: int, last: int) -> None:
        # A steady stream, at most 20 unanswered: the writer is busy with the bystander's
        # posts whenever an attacker's arrive, so they share batches.
        for n in range(first, last):
            await bystander.wait_until(
                functools.partial(bystander.has, "ack", n - 20), 10, f"the ack of post {n - 20}"
            )
            await bystander.ws.send(post(f"hello {n}", client_ids[n]))

    # 20 rounds, 4 attackers at a time.
    for wave in range(5):
        await asyncio.gather(
            bystander_posts(wave * 300, (wave + 1) * 300),
            *(hang_up(wave * 4 + n) for n in range(4)),
        )

    def answered() -> bool:
        acks, errors = bystander.of_type("ack"), bystander.of_type("error")
        return len(acks) + len(errors) >= 1500 and len(bystander.of_type("message")) >= len(acks)

    with contextlib.suppress(AssertionError):  # what is missing is told below
        await bystander.wait_until(answered, 15, "an answer to every post")
    acks = bystander.of_type("ack")
    messages = bystander.of_type("message")
    assert bystander.of_type("error") == []
    assert len(acks) == len(messages) == 1500, (
        f"of 1,500 posts, {len(acks)} acknowledged and {len(messages)} broadcast"
    )
    # Acknowledged once each and broadcast once each, in the order posted, with no gap.
    assert [ack["client_id"] for ack in acks] == client_ids
    assert [message["client_id"] for message in messages] == client_ids
    assert [message["seq"] for message in messages] == list(range(1, 1501))
    assert [ack["seq"] for ack in acks] == list(range(1, 1501))
    await bystander.close()


# Frames a JSON parser accepts but no database (nor the socket) can store: the escapes are
# written into the JSON text, as an attacker would send them.
POISON = [
    r'{"message":"x\ud800","client_id":"a1"}',  # a lone surrogate in the text
    r'{"message":"ok","client_id":"\u0000x"}',  # NUL in the client_id
    r'{"message":"ok","client_id":"x\udfff"}',  # a lone surrogate in the client_id
    r'{"message":"a\u0000b"}',  # NUL in the text
]


async def test_unstorable_text_is_refused_to_its_sender_and_fails_no_one_elses_post(
    server: DaphneServer,
) -> None:
    """Finding: a post holding a lone surrogate (JSON "\\ud800") failed the whole group
    commit: 23 of 40 posts of a bystander in another room got not_stored."""
    attacker = await Client.open(server, "poison")
    bystander = await Client.open(server, "calm")
    rounds = 20
    for round_ in range(rounds):
        for n in range(10):
            await bystander.ws.send(post(f"fine {round_}-{n}", f"c-{round_}-{n}"))
        await attacker.ws.send(POISON[round_ % len(POISON)])

    with contextlib.suppress(AssertionError):  # what is missing is told below
        await bystander.wait_until(
            lambda: bystander.count("ack") + bystander.count("error") >= 200,
            20,
            "an answer to every post",
        )
        await attacker.wait_until(
            functools.partial(attacker.has, "error", rounds), 10, "an error for every frame"
        )
    refused = [(frame["code"], frame.get("client_id")) for frame in bystander.of_type("error")]
    assert refused == [], f"{len(refused)} of the bystander's 200 posts refused: {refused[:3]}"
    assert bystander.count("ack") == 200
    assert [frame["code"] for frame in attacker.of_type("error")] == ["bad_frame"] * rounds
    assert attacker.of_type("ack") == []
    assert server.stored("poison") == []
    for client in (attacker, bystander):
        await client.close()


@pytest.mark.parametrize("fault", ["freeze", "stop"])
async def test_idle_rooms_hold_up_no_delivery_while_redis_is_out(
    server: DaphneServer, own_redis: RedisServer, fault: str
) -> None:
    """Finding: with Redis stopped or frozen, the reconcile first tried to leave the groups of
    idle rooms, failed or hung there, and delivered nothing: up to 18 s late, or not at all
    for a 15 s freeze. Delivery without Redis comes from the database, every reconcile."""
    # Every socket opens before the fault: a room new to the process needs Redis to join.
    poster = await Client.open(server, "live")
    reader = await Client.open(server, "live")
    idle_rooms = [f"idle-{n}" for n in range(4)]
    visitors = await asyncio.gather(*(Client.open(server, room) for room in idle_rooms))
    for visitor in visitors:
        await visitor.close()
    left_at = time.monotonic()

    (own_redis.freeze if fault == "freeze" else own_redis.stop)()
    try:
        # Post through the moment the idle rooms are due to be left, and a while beyond.
        sent: dict[str, float] = {}
        end = left_at + IDLE_ROOM_LINGER + RECONCILE_INTERVAL + 2
        while time.monotonic() < end:
            client_id = f"{fault}-{len(sent)}"
            sent[client_id] = time.monotonic()
            await poster.ws.send(post(f"while Redis is out ({fault})", client_id))
            await asyncio.sleep(0.25)
        allowed = RECONCILE_INTERVAL + 3
        with contextlib.suppress(AssertionError):
            await reader.wait_until(
                lambda: set(sent) <= set(reader.arrivals("message")),
                allowed,
                "every post",
            )
        received = reader.arrivals("message")
        delays = {cid: received.get(cid, float("inf")) - at for cid, at in sent.items()}
        late = {cid: round(delay, 1) for cid, delay in delays.items() if delay > allowed}
        assert not late, f"delivered late or never, Redis {fault}: {late}"
        acks = poster.arrivals("ack")
        assert set(acks) == set(sent)
        print(
            f"Redis {fault}: {len(sent)} posts, delivered in at most "
            f"{max(delays.values()):.2f} s, acked in at most "
            f"{max(acks[cid] - at for cid, at in sent.items()):.2f} s"
        )
    finally:
        if fault == "freeze":
            own_redis.thaw()
        else:
            own_redis.start()

    # Redis is back: the room goes on, and a room new to the process can be joined again.
    await poster.ws.send(post("Redis is back", "back"))
    await reader.wait_until(lambda: "back" in reader.arrivals("message"), allowed, "the post")
    newcomer = await Client.open(server, "after-the-outage")
    await newcomer.ws.send(post("hello again", "again"))
    await newcomer.wait_until(
        lambda: "again" in newcomer.arrivals("message"), allowed, "the newcomer's post"
    )
    for client in (poster, reader, newcomer):
        await client.close()


async def test_a_history_request_in_another_process_right_after_a_rooms_first_post(
    server: DaphneServer, own_redis: RedisServer
) -> None:
    """Found writing these tests: an acknowledged post is stored, yet a socket of another
    daphne process in the same room answers a history request with `[]` ("nothing in that
    direction") until its hub learns the new room's id: the publish's round trip through Redis
    (a millisecond or so), up to RECONCILE_INTERVAL while Redis is out, as here."""
    other = DaphneServer(
        redis_url=own_redis.url, database=server.database, extra_env={"CHAT_LIMITS": "off"}
    ).start()
    try:
        poster = await Client.open(server, "brand-new")
        asker = await Client.open(other, "brand-new")
        own_redis.freeze()
        try:
            await poster.ws.send(post("first", "first"))
            await poster.wait_until(functools.partial(poster.has, "ack", 1), 5, "the ack")
            await asker.ws.send(json.dumps({"type": "history", "after": 0, "limit": 10}))
            await asker.wait_until(functools.partial(asker.has, "history", 1), 5, "the reply")
        finally:
            own_redis.thaw()
        assert [message["seq"] for message in asker.of_type("history")[0]["messages"]] == [1]
        for client in (poster, asker):
            await client.close()
    finally:
        other.stop()


async def test_rooms_left_idle_during_a_redis_outage_are_unsubscribed_after_it(
    server: DaphneServer, own_redis: RedisServer
) -> None:
    """Found writing the outage test: the groups of rooms left idle while Redis was stopped
    stay subscribed once it is back, each one's messages sent to this process for nothing."""
    idle_rooms = [f"idle-{n}" for n in range(4)]
    stays = await Client.open(server, "stays")
    visitors = await asyncio.gather(*(Client.open(server, room) for room in idle_rooms))
    for visitor in visitors:
        await visitor.close()
    left_at = time.monotonic()
    own_redis.stop()
    # Nothing to watch while Redis is down: wait until the hub has tried to leave the groups.
    await asyncio.sleep(left_at + IDLE_ROOM_LINGER + 2 * RECONCILE_INTERVAL - time.monotonic())
    own_redis.start()

    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        deadline = time.monotonic() + 10
        while (await subscribers(client, ["stays"]))["stays"] == 0:
            assert time.monotonic() < deadline, "the process never came back to Redis"
            await asyncio.sleep(0.1)
        # Two reconciles later at most, it is subscribed to the rooms it is in, and no other.
        deadline = time.monotonic() + 2 * RECONCILE_INTERVAL + 1
        while (still := await subscribers(client, idle_rooms)) != dict.fromkeys(idle_rooms, 0):
            assert time.monotonic() < deadline, f"still subscribed after the outage: {still}"
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    await stays.close()
