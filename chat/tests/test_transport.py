"""The daphne adapter's contract: what chat/transport.py uses of daphne, autobahn and Twisted.

If an upgrade changes any of it, a test here fails and names it; in production the same guard,
`direct_socket`, sends through plain ASGI instead and logs the change once. The plain-ASGI path
end to end is every WebsocketCommunicator test (test_consumer.py), and its slow-reader limit is
test_hostile.py::test_a_socket_that_never_reads_is_closed_at_the_limit; the direct path dropping
a slow reader of the real consumer under load is test_slow_reader.py.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import deque
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import websockets
from autobahn.websocket.protocol import PreparedMessage, WebSocketServerProtocol
from daphne.server import Server
from daphne.testing import BaseDaphneTestingInstance
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.testing import StringTransport

from chat import transport
from chat.transport import (
    METHOD,
    PROTOCOL_SHAPES,
    TRANSPORT_SHAPES,
    DirectSocket,
    OutFrame,
    Receive,
    Scope,
    Send,
    direct_socket,
    joined_payload,
    text_frame,
)

BIG = "x" * 100_000

# --- the installed packages ------------------------------------------------------------------


def test_daphne_connections_are_autobahn_protocols_with_the_methods_the_direct_path_calls() -> None:
    assert issubclass(WebSocketProtocol, WebSocketServerProtocol)
    prepared = PreparedMessage(b"ok", False, False, False)
    # Each called the way DirectSocket calls it.
    calls: dict[str, tuple[Any, ...]] = {
        "sendPreparedMessage": (prepared,),
        "sendData": (b"\x81\x02ok",),
        "sendMessage": (b"ok", False),
        "sendCloseFrame": (1012, None, False),  # chat/lifecycle.py's close for a restart
    }
    assert set(calls) == {name for name, kind in PROTOCOL_SHAPES.items() if kind == METHOD}
    for name, args in calls.items():
        inspect.signature(getattr(WebSocketProtocol, name)).bind(None, *args)
    assert isinstance(WebSocketProtocol.STATE_OPEN, int)


def test_autobahn_prepares_frames_as_rfc6455_lays_them_out() -> None:
    assert transport._frames_as_rfc6455()
    assert PreparedMessage(b"x" * 200, False, False, False).payloadHybi[:4] == b"\x81\x7e\x00\xc8"
    assert joined_payload([OutFrame(1, "a"), OutFrame(2, "é")]) == b"\x81\x01a\x81\x02\xc3\xa9"


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frames_are_the_bytes_autobahn_sends_for_a_text_message(length: int) -> None:
    factory = WebSocketFactory(object(), server="Daphne")
    protocol: Any = factory.buildProtocol(None)
    wire = StringTransport()
    protocol.makeConnection(wire)
    protocol.state = protocol.STATE_OPEN
    protocol._perMessageCompress = None
    data = ("é" * length).encode()[:length]
    protocol.sendMessage(data, False)
    assert text_frame(data) == wire.value()


def test_direct_writes_queue_behind_autobahns_own_when_it_holds_some() -> None:
    written: list[tuple[str, bytes]] = []
    protocol = connection()
    protocol.sendData = lambda data: written.append(("autobahn", data))
    protocol.transport.write = lambda data: written.append(("twisted", data))
    socket = DirectSocket(protocol)
    socket.send_text("one")
    protocol.send_queue.append((b"held by autobahn", False))
    socket.send([OutFrame(2, "two")])
    socket.send_text("three")
    assert written == [
        ("twisted", b"\x81\x03one"),
        ("autobahn", b"\x81\x03two"),
        ("autobahn", b"\x81\x05three"),
    ]


class SlowKernel(FileDescriptor):
    """Twisted's write buffer in front of a kernel that takes at most `takes` bytes a write."""

    connected = 1

    def __init__(self, takes: int) -> None:
        super().__init__()  # the reactor is never asked: this buffer does its own writing
        self.takes = takes

    def startWriting(self) -> None:
        pass

    def stopWriting(self) -> None:
        pass

    def writeSomeData(self, data: bytes) -> int:
        return min(len(data), self.takes)


def test_twisted_write_buffer_counts_what_the_kernel_has_not_taken() -> None:
    assert issubclass(tcp.Server, FileDescriptor)
    assert callable(tcp.Server.abortConnection)
    assert callable(tcp.Server.write)
    kernel = SlowKernel(takes=600)
    socket = DirectSocket(SimpleNamespace(transport=kernel))
    kernel.write(b"a" * 1000)
    kernel.write(b"b" * 500)
    assert socket.buffered() == 1500  # all still in the list buffer (_tempDataLen)
    kernel.doWrite()
    assert socket.buffered() == 900  # joined into dataBuffer, 600 taken (offset)
    kernel.write(b"c" * 100)
    assert socket.buffered() == 1000  # both at once
    kernel.doWrite()
    kernel.doWrite()
    assert socket.buffered() == 0


# --- a live daphne ---------------------------------------------------------------------------


async def probe(scope: Scope, receive: Receive, send: Send) -> None:
    """Reports over the socket what `direct_socket` made of daphne's `send`, then uses it."""
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    server_send = send
    socket = direct_socket(server_send)
    if socket is None:
        if isinstance(server_send, functools.partial) and server_send.args:
            why = transport._changed_shape(server_send.args[0])
        else:
            why = f"send is {server_send!r}"
        await send({"type": "websocket.send", "text": f"plain ASGI: {why}"})
        return
    socket.send_text("direct")
    frames = [OutFrame(1, "one"), OutFrame(2, "two")]
    socket.send(frames)
    socket.send(frames, joined_payload(frames))
    socket.send_text(BIG)
    socket.send_text(f"buffered {socket.buffered()}")
    await receive()  # the client has read it all and asks to be treated as a slow reader
    socket.limit = 0
    socket.send_text(BIG)
    socket.send_text("never")  # over the limit: the connection is aborted instead
    await receive()  # websocket.disconnect


@pytest.fixture
def daphne_port() -> Iterator[int]:
    """daphne serving `probe` in a child process (daphne's own test harness); its port."""
    server = BaseDaphneTestingInstance(application=probe)
    server.startup_timeout = 20
    with server:
        yield server.port


async def test_under_daphne_sockets_take_the_direct_path_and_it_works(daphne_port: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{daphne_port}/", max_size=None) as client:
        assert await client.recv() == "direct"
        # Prepared frames, one by one and joined into one write.
        assert [await client.recv() for _ in range(5)] == ["one", "two", "one", "two", BIG]
        # The transport's buffer is read for real: what was just written was still in it.
        buffered = str(await client.recv())
        assert buffered.startswith("buffered ")
        assert int(buffered.split()[1]) >= len(BIG)
        await client.send("now")
        received: list[str | bytes] = []

        async def read_until_closed() -> None:
            while True:
                received.append(await asyncio.wait_for(client.recv(), timeout=10))

        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await read_until_closed()
    assert closed.value.rcvd is None  # aborted, no close frame
    assert "never" not in received


# --- the guard -------------------------------------------------------------------------------


def noop(*args: object) -> None:
    pass


def connection() -> SimpleNamespace:
    """A stand-in for daphne's connection with every shape the direct path uses."""
    return SimpleNamespace(
        sendPreparedMessage=noop,
        sendData=noop,
        sendMessage=noop,
        sendCloseFrame=noop,
        state=3,
        STATE_OPEN=3,
        _perMessageCompress=None,
        send_queue=deque(),
        transport=SimpleNamespace(
            write=noop, dataBuffer=b"abcdef", offset=2, _tempDataLen=10, abortConnection=noop
        ),
    )


def daphne_send(protocol: object) -> Any:
    """A `send` made the way daphne makes it, by daphne's own `Server.handle_reply`."""
    return functools.partial(Server.__new__(Server).handle_reply, protocol)


@pytest.fixture
def warned(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], list[str]]:
    """The guard's warnings so far, in a process where it has not warned yet."""
    monkeypatch.setattr(transport, "_fallback_logged", False)
    caplog.set_level(logging.WARNING, logger="chat.transport")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "chat.transport"]


def test_a_connection_with_every_shape_gets_the_direct_path(
    warned: Callable[[], list[str]],
) -> None:
    socket = direct_socket(daphne_send(connection()))
    assert isinstance(socket, DirectSocket)
    assert socket.buffered() == len(b"abcdef") - 2 + 10
    assert warned() == []


def test_another_servers_send_gets_plain_asgi_quietly(warned: Callable[[], list[str]]) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    assert direct_socket(queue.put) is None

    async def handle_reply(protocol: object, message: dict[str, Any]) -> None:
        pass  # made the way daphne makes its send, but not daphne's

    assert direct_socket(functools.partial(handle_reply, connection())) is None
    assert warned() == []


SHAPES = [("connection", name) for name in PROTOCOL_SHAPES] + [
    ("transport", name) for name in TRANSPORT_SHAPES
]


@pytest.mark.parametrize(("owner", "name"), SHAPES)
def test_a_missing_shape_falls_back_with_one_warning_that_names_it(
    owner: str, name: str, warned: Callable[[], list[str]]
) -> None:
    protocol = connection()
    delattr(protocol if owner == "connection" else protocol.transport, name)
    assert direct_socket(daphne_send(protocol)) is None
    assert direct_socket(daphne_send(protocol)) is None
    assert direct_socket(daphne_send(connection())) is not None  # others are unaffected
    [warning] = warned()
    assert f"has no {name}" in warning


@pytest.mark.parametrize(
    ("owner", "name", "value", "named"),
    [
        ("connection", "sendData", b"not a method", "sendData that is not a method"),
        ("connection", "state", "OPEN", "state of type builtins.str, not int"),
        ("transport", "dataBuffer", [b"ab"], "dataBuffer of type builtins.list, not bytes"),
        ("transport", "abortConnection", None, "abortConnection that is not a method"),
        ("connection", "transport", None, "transport (builtins.NoneType) has no dataBuffer"),
    ],
)
def test_a_shape_of_another_kind_falls_back_with_one_warning_that_names_it(
    owner: str,
    name: str,
    value: object,
    named: str,
    warned: Callable[[], list[str]],
) -> None:
    protocol = connection()
    setattr(protocol if owner == "connection" else protocol.transport, name, value)
    assert direct_socket(daphne_send(protocol)) is None
    assert direct_socket(daphne_send(protocol)) is None
    [warning] = warned()
    assert named in warning


def test_a_daphne_send_that_is_no_longer_a_partial_falls_back_with_one_warning(
    warned: Callable[[], list[str]],
) -> None:
    server = Server.__new__(Server)
    assert direct_socket(server.handle_reply) is None
    assert direct_socket(functools.partial(server.handle_reply)) is None
    [warning] = warned()
    assert "no longer a functools.partial" in warning


def test_prepared_messages_framed_differently_fall_back_with_one_warning(
    warned: Callable[[], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Reframed:
        def __init__(self, payload: bytes, *flags: bool) -> None:
            self.payloadHybi = b"\x01" + payload

    monkeypatch.setattr(transport, "PreparedMessage", Reframed)
    transport._frames_as_rfc6455.cache_clear()
    try:
        assert direct_socket(daphne_send(connection())) is None
    finally:
        transport._frames_as_rfc6455.cache_clear()
    [warning] = warned()
    assert "PreparedMessage" in warning
