"""Who is in each room right now, across processes, with no ghosts.

A socket enters a room as a person (a stable key and a display name) and leaves it; a room's
people are the display names of its sockets, one per person. In memory (no Redis) the sockets
are this process's own. In Redis each room has two keys, in one hash slot:

    ZSET {prefix}:presence:{ROOM}      socket id, scored by its expiry time (Unix seconds)
    HASH {prefix}:presence:{ROOM}:who  socket id → JSON [person key, name, entered at]

The process that entered a socket re-asserts it every heartbeat (a third of the lifetime), so
the sockets of a process killed without cleanup expire within the lifetime, and sockets lost
by a Redis restart or a failed write come back at the next heartbeat. Readers drop expired
sockets; nothing else ever has to clean up after a dead process.

Every Redis call is bounded by a short timeout and fails soft: enter and leave never raise
(the heartbeat repairs a lost enter; a lost leave expires within the lifetime), and a failed
read answers with the last list read for the room, merged with this process's own sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from django.conf import settings

from chat import protocol
from chat.people import GUEST_KEY_PREFIX
from chat.redis_client import (
    STORE_RETRY_AFTER,
    STORE_TIMEOUT,
    Heartbeat,
    StoreGuard,
    connection_pool,
    is_memory,
)
from chat.runtime import PerLoop

logger = logging.getLogger(__name__)

# A socket nobody re-asserts is gone this long after its last heartbeat; heartbeats come three
# times a lifetime, so two missed ones (a long GC pause, a Redis blip) are forgiven.
LIFETIME = 60.0
# Person keys and names come from the server (user ids, usernames of at most 150 characters,
# guest names), but a key of Redis must never be unbounded: longer keys are hashed, longer
# names cut.
MAX_PERSON_KEY_CHARS = 200
MAX_NAME_CHARS = 150
# A heartbeat writes this many sockets per round trip, at most; a read, this many rooms.
HEARTBEAT_BATCH = 1000
READ_BATCH = 500


# The wire shapes live with the rest of the wire format.
PersonName = protocol.PersonName
PresenceFrame = protocol.PresenceFrame


class Entry(NamedTuple):
    """A socket in a room: whose it is, under which name, and when it entered.

    Stored in Redis as its JSON array; readers unpack those arrays as they unpack an Entry.
    """

    person_key: str
    name: str
    # Unix time: of a person's sockets, the last to enter names them (a guest renamed in
    # another tab), across processes.
    entered_at: float


class Presence:
    """The people of every room, as one event loop (one daphne process) sees and tells them."""

    def __init__(
        self,
        *,
        storage: str = "memory://",
        prefix: str = "chat",
        lifetime: float = LIFETIME,
        heartbeat_interval: float | None = None,
        timeout: float = STORE_TIMEOUT,
        retry_store_after: float = STORE_RETRY_AFTER,
    ) -> None:
        self.prefix = prefix
        self.lifetime = lifetime
        # This process's sockets: room → socket id → entry. The whole store in memory.
        self.local: dict[str, dict[str, Entry]] = {}
        # The last people read from Redis for a room with local sockets, and when (monotonic).
        self.known: dict[str, tuple[float, list[str]]] = {}
        self.last_entered_at = 0.0
        self.redis: aioredis.Redis | None = None
        if not is_memory(storage, setting="CHAT_PRESENCE_STORAGE"):
            self.redis = aioredis.Redis.from_pool(connection_pool(storage, timeout=timeout))
            self.read_script = self.redis.register_script(_READ_ROOMS)
        self.guard = StoreGuard(
            logger=logger,
            consequence="presence shows the last people read and this process's own",
            timeout=timeout,
            retry_after=retry_store_after,
        )
        self.heartbeat = Heartbeat(
            self.beat,
            interval=lifetime / 3 if heartbeat_interval is None else heartbeat_interval,
            name="chat-presence-beat",
        )
        # Clear while a heartbeat write is on its way: a leave waits for it, so that the
        # heartbeat cannot re-add the socket after the leave removed it.
        self.beat_settled = asyncio.Event()
        self.beat_settled.set()

    @classmethod
    def from_settings(cls) -> Presence:
        """Presence as the settings say: in memory or in Redis, and its lifetime."""
        return cls(
            storage=settings.CHAT_PRESENCE_STORAGE,
            lifetime=float(settings.CHAT_PRESENCE_LIFETIME),
        )

    async def enter(self, room: str, socket_id: str, person_key: str, name: str) -> None:
        """A socket of a person, under a display name, is in a room."""
        # Strictly increasing, so that the later of two quick enters wins even on a coarse clock.
        self.last_entered_at = max(time.time(), self.last_entered_at + 1e-6)
        entry = Entry(_bounded_key(person_key), name[:MAX_NAME_CHARS], self.last_entered_at)
        self.local.setdefault(room, {})[socket_id] = entry
        if self.redis is None:
            return
        self.heartbeat.start()
        await self.guard(lambda: self.write({room: {socket_id: entry}}))

    async def leave(self, room: str, socket_id: str) -> None:
        """A socket is no longer in a room (a no-op for a socket that did not enter it)."""
        sockets = self.local.get(room)
        if sockets is None or sockets.pop(socket_id, None) is None:
            return
        if not sockets:
            del self.local[room]
            self.known.pop(room, None)
        if self.redis is None:
            return
        await self.beat_settled.wait()
        await self.guard(lambda: self.remove({room: [socket_id]}))

    async def people(self, room: str) -> list[str]:
        """The display names in a room now, one per person, sorted case-insensitively."""
        return (await self.people_of_rooms([room]))[room]

    async def people_of_rooms(self, rooms: list[str]) -> dict[str, list[str]]:
        """The people of each of many rooms, in one round trip to Redis."""
        rooms = list(dict.fromkeys(rooms))
        if self.redis is None or not rooms:
            return {room: _names(self.local.get(room, {}).values()) for room in rooms}
        read = await self.guard(lambda: self.read(rooms))
        if read is None:
            return {room: self.fallback(room) for room in rooms}
        now = time.monotonic()
        for room in rooms:
            if room in self.local:
                self.known[room] = (now, read[room])
        return read

    async def close(self) -> None:
        """Stop the heartbeat, take this process's sockets out of Redis, let go of the client."""
        await self.heartbeat.stop()
        if self.redis is None:
            return
        if self.local:
            sockets = {room: list(entries) for room, entries in self.local.items()}
            await self.guard(lambda: self.remove(sockets))
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.guard.timeout):
                await self.redis.aclose()

    # --- inside ------------------------------------------------------------------------------

    def keys(self, room: str) -> tuple[str, str]:
        """A room's sorted set of sockets and its hash of who they are (one hash slot)."""
        key = f"{self.prefix}:presence:{{{room}}}"
        return key, f"{key}:who"

    def fallback(self, room: str) -> list[str]:
        """While Redis fails: the last people read (for a lifetime) and this process's own."""
        names = set(_names(self.local.get(room, {}).values()))
        known = self.known.get(room)
        if known is not None and time.monotonic() - known[0] < self.lifetime:
            names.update(known[1])
        return _sorted(names)

    async def read(self, rooms: list[str]) -> dict[str, list[str]]:
        """Drop the expired sockets of the rooms and read the people of the rest."""
        assert self.redis is not None
        people: dict[str, list[str]] = {}
        for start in range(0, len(rooms), READ_BATCH):
            part = rooms[start : start + READ_BATCH]
            keys = [key for room in part for key in self.keys(room)]
            reply = await self.read_script(keys=keys, args=[time.time()])
            for room, values in zip(part, json.loads(reply), strict=True):
                # A malformed value (nothing here writes one) fails the read: TypeError,
                # ValueError, and the guard's fallback.
                people[room] = _names(values)
        return people

    async def write(self, sockets: dict[str, dict[str, Entry]]) -> None:
        """Add or re-assert sockets, expiring a lifetime from now."""
        assert self.redis is not None
        expires_at = time.time() + self.lifetime
        lifetime_ms = math.ceil(self.lifetime * 1000)
        # Transactions, so that no reader sees a socket without its hash field or the reverse.
        async with self.redis.pipeline(transaction=True) as pipe:
            for room, entries in sockets.items():
                key, who = self.keys(room)
                pipe.zadd(key, dict.fromkeys(entries, expires_at))
                pipe.hset(who, mapping={sid: _encode(entry) for sid, entry in entries.items()})
                pipe.pexpire(key, lifetime_ms)
                pipe.pexpire(who, lifetime_ms)
            await pipe.execute()

    async def remove(self, sockets: dict[str, list[str]]) -> None:
        """Take sockets out of their rooms."""
        assert self.redis is not None
        async with self.redis.pipeline(transaction=True) as pipe:
            for room, socket_ids in sockets.items():
                key, who = self.keys(room)
                pipe.zrem(key, *socket_ids)
                pipe.hdel(who, *socket_ids)
            await pipe.execute()

    async def beat(self) -> None:
        """Re-assert every socket of this process, a lifetime ahead, in batches."""
        rooms = list(self.local)
        while rooms:
            batch: dict[str, dict[str, Entry]] = {}
            count = 0
            while rooms and count < HEARTBEAT_BATCH:
                # Read when sent, not when the beat began: a socket left meanwhile stays out.
                room = rooms.pop()
                entries = self.local.get(room)
                if entries:
                    batch[room] = dict(entries)
                    count += len(entries)
            self.beat_settled.clear()
            try:
                await self.guard(functools.partial(self.write, batch))
            finally:
                self.beat_settled.set()


# The people of many rooms in one round trip. KEYS: each room's sorted set of sockets, then its
# hash of who they are; ARGV[1]: now (Unix seconds). Drops the expired sockets (those of dead
# processes) with their hash fields, and returns the hash values (JSON) of the live ones as one
# JSON text, a list per room: a single string parses in C at once, where a nested reply of one
# bulk string per socket took redis-py's parser ~4 µs a socket. unpack() is given at most 1000
# values at once: Lua's stack is limited (~8000).
_READ_ROOMS = """
local now = ARGV[1]
local rooms = {}
for i = 1, #KEYS, 2 do
    local sockets, who = KEYS[i], KEYS[i + 1]
    local dead = redis.call('ZRANGEBYSCORE', sockets, '-inf', now)
    if #dead > 0 then
        for j = 1, #dead, 1000 do
            redis.call('HDEL', who, unpack(dead, j, math.min(j + 999, #dead)))
        end
        redis.call('ZREMRANGEBYSCORE', sockets, '-inf', now)
    end
    local live = redis.call('ZRANGE', sockets, 0, -1)
    local values = {}
    for j = 1, #live, 1000 do
        local found = redis.call('HMGET', who, unpack(live, j, math.min(j + 999, #live)))
        for k = 1, #found do
            if found[k] then
                values[#values + 1] = found[k]
            end
        end
    end
    rooms[#rooms + 1] = '[' .. table.concat(values, ',') .. ']'
end
return '[' .. table.concat(rooms, ',') .. ']'
"""


class GuestName(str):
    """A guest's display name: a str that remembers it is a guest's, as Django's SafeString
    remembers it is safe, so that every list of names can mark guests without changing shape."""

    __slots__ = ()


def _names(entries: Iterable[Sequence[Any]]) -> list[str]:
    """One name per person (of its latest socket), distinct, sorted case-insensitively;
    guests' names are GuestName."""
    # Plain tuples and unpacking: this runs for every socket of every local room each second.
    latest: dict[str, tuple[float, str]] = {}
    for person_key, name, entered_at in entries:
        seen = latest.get(person_key)
        if seen is None or entered_at > seen[0]:
            latest[person_key] = (entered_at, name)
    return _sorted(
        {
            GuestName(name) if person_key.startswith(GUEST_KEY_PREFIX) else name
            for person_key, (_, name) in latest.items()
        }
    )


def _sorted(names: Iterable[str]) -> list[str]:
    return sorted(names, key=lambda name: (name.casefold(), name))


def _bounded_key(person_key: str) -> str:
    if len(person_key) <= MAX_PERSON_KEY_CHARS:
        return person_key
    digest = hashlib.blake2b(person_key.encode("utf-8", "surrogatepass"), digest_size=16)
    return f"hashed:{digest.hexdigest()}"


def _encode(entry: Entry) -> str:
    # ensure_ascii: a lone surrogate in a name is escaped, never an encoding error.
    return json.dumps([entry.person_key, entry.name, entry.entered_at])


def diff(before: list[str], after: list[str]) -> tuple[list[str], list[str]]:
    """The names that joined and the names that left between two people lists."""
    was, now = set(before), set(after)
    return [name for name in after if name not in was], [name for name in before if name not in now]


def presence_frame(
    people: list[str] | None = None,
    *,
    joined: list[str] | None = None,
    left: list[str] | None = None,
) -> PresenceFrame:
    """A presence frame: everyone (`people`), or the changes (`joined` and `left`)."""
    if people is not None:
        if joined is not None or left is not None:
            raise ValueError("a presence frame carries either people or joined/left, not both")
        return {"type": "presence", "people": _named(people)}
    if joined is None and left is None:
        raise ValueError("a presence frame needs people, or joined and/or left")
    return {"type": "presence", "joined": _named(joined or []), "left": _named(left or [])}


def _named(names: list[str]) -> list[PersonName]:
    return [
        {"name": str(name), "guest": True} if isinstance(name, GuestName) else {"name": name}
        for name in names
    ]


presences: PerLoop[Presence] = PerLoop(Presence.from_settings)
