"""Who each socket is told is in its room: the presence store (chat/presence.py), fanned out.

Per process, a roster keeps, for each room with sockets here, the list of people its sockets
were last told. A socket that joins is told the whole list; after that, its room's sockets get
only who joined and who left. Changes are coalesced: the roster reads the store for all its
rooms at once, at most every COALESCE seconds after a local join or leave and at least every
INTERVAL seconds (for other processes' changes, and people whose process died, whom the store
forgets after its lifetime) — so 1,000 people joining a room cost each socket a frame or two,
not a thousand.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Protocol

from chat.presence import Presence, diff, presence_frame, presences
from chat.runtime import PerLoop

logger = logging.getLogger(__name__)

# The store is read at least this often (seconds)...
INTERVAL = 1.0
# ...and this long after a local join or leave, so that a burst of them is read once.
COALESCE = 0.2


class Listener(Protocol):
    """A socket as the roster sees it (ChatConsumer)."""

    def send_presence(self, text: str) -> None:
        """Send this presence frame (JSON text)."""


@dataclass(eq=False)
class _Room:
    # Sockets told the list, and those still to be told it whole.
    listeners: set[Listener] = field(default_factory=set)
    waiting: set[Listener] = field(default_factory=set)
    told: list[str] = field(default_factory=list)


@dataclass
class Roster:
    """The presence fan-out of one process (one event loop)."""

    presence: Presence = field(default_factory=presences.get)
    rooms: dict[str, _Room] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # Leaves being written to the store (strong references to their tasks).
    leaving: set[asyncio.Future[None]] = field(default_factory=set)

    async def enter(
        self, listener: Listener, *, room: str, socket_id: str, person_key: str, name: str
    ) -> None:
        """A socket is in `room`: count its person present, and tell it who is there."""
        await self.presence.enter(room, socket_id, person_key, name)
        self.rooms.setdefault(room, _Room()).waiting.add(listener)
        self._wake()

    def leave(self, listener: Listener, *, room: str, socket_id: str) -> None:
        """A socket left `room` (call only after its `enter` returned)."""
        state = self.rooms.get(room)
        if state is not None:
            state.listeners.discard(listener)
            state.waiting.discard(listener)
        left = asyncio.ensure_future(self.presence.leave(room, socket_id))
        self.leaving.add(left)
        left.add_done_callback(self._left)

    def _left(self, task: asyncio.Future[None]) -> None:
        self.leaving.discard(task)
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="chat-roster")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.changed.wait(), INTERVAL)
                await asyncio.sleep(COALESCE)
            except TimeoutError:
                pass
            self.changed.clear()
            try:
                await self.tell()
            except Exception:
                logger.exception("telling sockets who is present failed")

    async def tell(self) -> None:
        """Read who is in each local room; tell its sockets what changed (newcomers: all)."""
        for name in [name for name, state in self.rooms.items() if not state.listeners]:
            if not self.rooms[name].waiting:
                del self.rooms[name]
        if not self.rooms:
            return
        people = await self.presence.people_of_rooms(list(self.rooms))
        for name, state in list(self.rooms.items()):
            now = people.get(name, [])
            joined, left = diff(state.told, now)
            if (joined or left) and state.listeners:
                _send(state.listeners, presence_frame(joined=joined, left=left))
            state.told = now
            if state.waiting:
                _send(state.waiting, presence_frame(now))
                state.listeners |= state.waiting
                state.waiting.clear()

    async def close(self) -> None:
        """Stop, and take this process's sockets out of the store."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await asyncio.gather(*self.leaving, return_exceptions=True)
        await self.presence.close()


def _send(listeners: set[Listener], frame: object) -> None:
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    for listener in tuple(listeners):
        try:
            listener.send_presence(text)
        except Exception:
            logger.exception("sending a presence frame failed")


rosters: PerLoop[Roster] = PerLoop(Roster)
