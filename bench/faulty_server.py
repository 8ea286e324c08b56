"""A deliberately faulty chat server: proof that the bench's own checks find what they claim.

    python -m bench.faulty_server --port 8765
    python -m bench.loadclient --url ws://127.0.0.1:8765 --clients 5 --messages 100

Two kinds of socket, by path:

- `/ws/chat/<room>/`: a room broadcaster like `bench/bare_asgi.py` (each `{"message": ...}`
  posted goes out as `{"type": "message", "message": ...}` to every socket of the room, the
  sender's included), with faults. Number the room's sockets in the order they joined and its
  messages in the order they were posted, both from 0:

  - socket 1 never gets every 10th message (9, 19, …);
  - socket 2 gets every 25th message (12, 37, …) twice;
  - socket 3 gets every 20th message (0, 20, …) only after the one that follows it;
  - socket 4 gets, before every 50th message (24, 74), an error frame and a copy of the message
    addressed to another room;
  - every socket gets, on joining, frames that are not deliveries: text that is not JSON, a
    JSON list, an ack.

  A room of 5 clients and 100 messages therefore has 10 deliveries lost, 4 duplicated, 5 out of
  order and 2 error frames (`FAULTS_PER_100`); the load client must report exactly those.
- `/history/<fault>/`: a catch-up as `?after=0` sends one (`message` frames with `seq`, then
  `synced`) of a room of HISTORY_LENGTH messages, whole (`whole`) or with one fault: `gap`,
  `duplicate`, `swap`, `short` (the last message missing, though `synced` names it),
  `wrong_synced` (every message, but `synced` says one fewer) or `cut` (closed before `synced`).
  `bench/fairness.py` must call only the whole one complete, and each fault a different check's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

# What the load client must report for a room of 5 clients and 100 messages.
FAULTS_PER_100 = {"lost": 10, "dupes": 4, "order_errors": 5, "error_frames": 2}
DROP_EVERY, DUPLICATE_EVERY, SWAP_EVERY, ERROR_EVERY = 10, 25, 20, 50
# Extra frames go out in the middle of a period, never with a room's last message: a client
# stops reading once it has every delivery, and must have read them by then.
DUPLICATE_AT, ERROR_AT = 12, 24
# Which socket of a room (in join order) suffers which fault.
DROPPED_TO, DUPLICATED_TO, SWAPPED_TO, ERRORS_TO = 1, 2, 3, 4

HISTORY_LENGTH = 20
# The histories bench/fairness.py must call bad, each caught by one of its checks (`cut` never
# reaches `synced`: it is cut off, not bad).
BAD_HISTORIES = ("gap", "duplicate", "swap", "short", "wrong_synced")

_ROOM_PATH = re.compile(r"/ws/chat/(\w+)/")
_HISTORY_PATH = re.compile(r"/history/(\w+)/")


@dataclass
class _Room:
    """The sockets of one room in join order, how many messages it has had, and what is held."""

    members: dict[ServerConnection, int] = field(default_factory=dict)  # socket → join order
    joined: int = 0
    posted: int = 0
    held: dict[ServerConnection, str] = field(default_factory=dict)  # swap: sent after the next


class FaultyChat:
    """The server's state: its rooms."""

    def __init__(self) -> None:
        self.rooms: dict[str, _Room] = {}

    async def handle(self, ws: ServerConnection) -> None:
        """Route a socket by its path."""
        path = urlsplit(ws.request.path if ws.request else "").path
        if match := _ROOM_PATH.fullmatch(path):
            await self.serve_room(ws, match.group(1))
        elif match := _HISTORY_PATH.fullmatch(path):
            await send_history(ws, match.group(1))
        else:
            await ws.close(1008)

    async def serve_room(self, ws: ServerConnection, name: str) -> None:
        """Join the room, broadcast (with faults) what this socket posts, leave on close."""
        room = self.rooms.setdefault(name, _Room())
        room.members[ws] = room.joined
        room.joined += 1
        try:
            for noise in ("not json", "[1, 2]", json.dumps({"type": "ack", "seq": 1})):
                await ws.send(noise)
            async for raw in ws:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    await self.broadcast(room, name, json.loads(raw)["message"])
        except ConnectionClosed:
            pass
        finally:
            del room.members[ws]
            if not room.members:
                self.rooms.pop(name, None)

    async def broadcast(self, room: _Room, name: str, message: str) -> None:
        """Send the room's next message to every member, each with its fault."""
        n = room.posted
        room.posted += 1
        frame = json.dumps({"type": "message", "message": message})
        for member, index in tuple(room.members.items()):
            for out in _frames_for(room, index, member, n, frame, name, message):
                with contextlib.suppress(ConnectionClosed):
                    await member.send(out)


def _frames_for(
    room: _Room, index: int, member: ServerConnection, n: int, frame: str, name: str, message: str
) -> list[str]:
    """What socket `index` of a room gets for the room's message `n`."""
    if index == DROPPED_TO and n % DROP_EVERY == DROP_EVERY - 1:
        return []
    if index == DUPLICATED_TO and n % DUPLICATE_EVERY == DUPLICATE_AT:
        return [frame, frame]
    if index == SWAPPED_TO:
        if n % SWAP_EVERY == 0:
            room.held[member] = frame
            return []
        held = room.held.pop(member, None)
        return [frame] if held is None else [frame, held]
    if index == ERRORS_TO and n % ERROR_EVERY == ERROR_AT:
        elsewhere = message.replace(f"b|{name}|", f"b|{name}_other|", 1)
        error = json.dumps({"type": "error", "code": "faulty"})
        return [error, json.dumps({"type": "message", "message": elsewhere}), frame]
    return [frame]


def history_seqs(fault: str) -> tuple[list[int], int | None]:
    """The seqs a catch-up with this fault sends, and the `last_seq` of its `synced` (None: cut
    off before it)."""
    seqs = list(range(1, HISTORY_LENGTH + 1))
    middle = HISTORY_LENGTH // 2
    if fault == "gap":
        del seqs[middle]
    elif fault == "duplicate":
        seqs.insert(middle, seqs[middle])
    elif fault == "swap":
        seqs[middle], seqs[middle + 1] = seqs[middle + 1], seqs[middle]
    elif fault == "short":
        seqs.pop()
    elif fault == "wrong_synced":
        return seqs, HISTORY_LENGTH - 1
    elif fault == "cut":
        return seqs[:middle], None
    elif fault != "whole":
        raise ValueError(f"not a history fault: {fault!r}")
    return seqs, HISTORY_LENGTH


async def send_history(ws: ServerConnection, fault: str) -> None:
    """Send a catch-up with `fault`; stay open after `synced` until the client closes."""
    try:
        seqs, last_seq = history_seqs(fault)
    except ValueError:
        await ws.close(1008)
        return
    for seq in seqs:
        await ws.send(
            json.dumps(
                {
                    "type": "message",
                    "seq": seq,
                    "message": f"history {seq}",
                    "author": "faulty",
                    "time": "2026-01-01T00:00:00.000Z",
                }
            )
        )
    if last_seq is None:
        await ws.close()
        return
    await ws.send(json.dumps({"type": "synced", "last_seq": last_seq}))
    # The client closes, as with the chat: `synced` is not the end of a socket.
    await ws.wait_closed()


@contextlib.asynccontextmanager
async def running(port: int = 0) -> AsyncIterator[str]:
    """The faulty server on 127.0.0.1 (a free port by default) in this event loop; yields its
    ws:// URL."""
    chat = FaultyChat()
    async with serve(chat.handle, "127.0.0.1", port, compression=None) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{bound}"


async def _serve_forever(port: int) -> None:
    async with running(port) as url:
        print(f"faulty chat server on {url}", flush=True)
        await asyncio.Future()


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(args.port))


if __name__ == "__main__":
    main()
