"""The chat WebSocket consumer: one socket in one room, from handshake to close.

It parses each frame (chat/protocol.py), checks the limits (chat/throttle.py), dispatches it —
a post to the process's group-commit writer (chat/writer.py), a history request to the
database — and answers the sender. What the socket is sent of its room, and in which order, is
its `MessageStream`'s job (chat/stream.py); everything it sends goes through one `Socket`
(chat/transport.py) under one slow-reader limit. Whatever a client sends, a failure in a
handler closes only that socket (4011), and the socket always leaves its room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

from chat import (
    access,
    auth,
    lifecycle,
    logging_context,
    metrics,
    protocol,
    retention,
    selectors,
    services,
    stream,
)
from chat.db import db_read
from chat.fanout import LocalRoom, hubs
from chat.models import Message
from chat.people import Person, SignInRequired, person_for_scope
from chat.protocol import ErrorCode, ProtocolError
from chat.roster import rosters
from chat.selectors import MessageRow
from chat.stream import MessageStream
from chat.throttle import FloodGuard, Refused, throttles
from chat.transport import (
    AsgiSocket,
    DirectSocket,
    OutFrame,
    Receive,
    Scope,
    Send,
    Socket,
    direct_socket,
)
from chat.writer import Failed, Outcome, RoomGone, writers

logger = logging.getLogger(__name__)

# Posts of one socket waiting to be stored, at most; beyond, its frames wait to be read.
MAX_IN_FLIGHT = 100
# Typing frames closer together than TYPING_INTERVAL by less than this are still accepted:
# timers in a browser's background tab, and the network, are not exact.
TYPING_LEEWAY = 0.5

# Sockets closed whose caps are still being released (strong references to the tasks).
_releasing: set[asyncio.Future[None]] = set()


class ChatConsumer(AsyncWebsocketConsumer):
    """One browser tab in one room."""

    # No channel per socket: the hub receives each room's messages once per process.
    channel_layer_alias = None
    # Nor groups: an empty tuple here spares each socket the empty list Channels makes it.
    groups = ()

    room_name: str
    person: Person
    # The client's address (daphne's --proxy-headers puts the forwarded one here) and this
    # socket's id for the per-address and per-person caps (chat/throttle.py).
    address: str
    socket_id: str = ""
    # True once the socket counts against its address's and person's caps.
    counted: bool = False
    # True once the roster counts this socket's person present in the room.
    present: bool = False
    # A client that speaks this protocol (it asked for `?sync=1` or `?after=`) is also sent
    # presence and typing frames; the tutorial's client is sent only message frames.
    aware: bool = False
    # True if this socket's person may edit and delete anyone's posts (chat/access.py).
    moderator: bool = False
    # When this socket last said its person is typing (loop time), to hold it to the pace.
    typed_at: float = float("-inf")
    flood: FloodGuard
    # The room as this process's hub holds it (its id, once it has messages).
    local: LocalRoom | None = None
    # What this socket is sent of its room, in order.
    stream: MessageStream
    # Where frames go; the daphne connection itself too, when there is one.
    socket: Socket | None = None
    direct: DirectSocket | None = None
    # Posts handed to the writer and not yet stored; past MAX_IN_FLIGHT the socket waits.
    in_flight: int = 0
    writable: asyncio.Event | None = None
    # Set once the socket is being closed: its frames are no longer read.
    close_sent: bool = False
    closing: asyncio.Future[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One socket's life: dispatch each event the server sends, in turn; always clean up.

        Channels' `AsyncConsumer.__call__` waits on the server and on a channel-layer channel
        at once (`await_many_dispatch`: a task, and an `asyncio.wait`, per event). This consumer
        has no channel (the hub receives for it), so it reads the server's events directly,
        which also keeps an idle socket to one coroutine.
        """
        self.scope = scope
        del scope  # connect lets go of it (below), and so must this frame
        self.channel_layer = None
        self.base_send = send
        self.stream = MessageStream(self.rows_after)
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        except Exception:
            logger.exception("a socket in room %s failed", getattr(self, "room_name", "?"))
            with contextlib.suppress(Exception):
                await self.base_send(
                    {"type": "websocket.close", "code": protocol.CLOSE_SERVER_ERROR}
                )
        finally:
            self.leave()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route an event to its handler without Channels' per-event thread hop.

        `AsyncConsumer.dispatch` runs `aclose_old_connections()` (a trip to the sync thread)
        before every event. Handlers here touch the database only through `chat.db`, which
        manages its connections itself.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        """Join the room, accept, send the history or the missed messages, then go live."""
        self.room_name = self.stream.room_name = self.scope["url_route"]["kwargs"]["room_name"]
        self.socket_id = secrets.token_hex(8)
        logging_context.bind_socket(connection=self.socket_id, room=self.room_name)
        client = self.scope.get("client")
        self.address = client[0] if client else "unknown"
        # The handshake rate first: a flood from one address is refused before it costs the
        # database a session or access read (the socket caps need the person, below).
        if not await self.handshake_rate_allows():
            return
        try:
            await auth.resolve_user(self.scope)  # a signed-in browser's session (chat/auth.py)
            self.person = person_for_scope(self.scope)
        except SignInRequired:
            error = ProtocolError(ErrorCode.SIGN_IN_REQUIRED, "Sign in to chat.")
            await self.refuse_handshake(error, protocol.CLOSE_SIGN_IN)
            return
        decision = await db_read(access.may_enter)(self.person.user, self.room_name)
        if not decision.allowed:
            error = ProtocolError(ErrorCode.FORBIDDEN, decision.detail)
            await self.refuse_handshake(error, protocol.CLOSE_FORBIDDEN)
            return
        if self.person.user is not None:
            self.moderator = await db_read(access.is_moderator)(self.person.user)
        self.flood = FloodGuard()
        if not await self.admitted():
            return
        query = self.scope.get("query_string", b"")
        self.aware = protocol.wants_synced(query)
        self.stream.plain_only = not self.aware
        resume_error = None
        try:
            after = protocol.parse_resume(query)
        except ProtocolError as error:
            after, resume_error = None, error
        # Join before reading the database: a message stored meanwhile is then in the read or
        # in the backlog (or both, and sent once). From `joined_at` on, the hub hands this
        # socket every message, so the history is what came up to there.
        self.local = local = await hubs.get().join(self, room_name=self.room_name)
        joined_at = local.last_seq
        await self.accept()
        lifecycle.opened(self)
        self.direct = direct_socket(self.base_send)
        self.socket = self.direct or AsgiSocket(self.base_send)
        self.stream.attach(self.socket)
        if resume_error is not None:
            self.send_error(resume_error)
        if after is not None and after > joined_at:
            # Beyond what this process delivered: in the database, or never in this room?
            positions = await db_read(selectors.rooms_positions)(names=[self.room_name])
            if after > positions.get(self.room_name, (None, 0))[1]:
                after = None
        if after is None:
            # A new client, or one whose position this room never reached: the latest page
            # up to where the live stream starts. Not the latest page now: posts that arrived
            # since the join (already in the backlog) would push older ones out of it, unseen.
            if local.room_id is not None and joined_at > 0:
                history = await db_read(selectors.rows_before)(
                    room_id=local.room_id, before=joined_at + 1, limit=protocol.HISTORY_ON_JOIN
                )
                await self.stream.send_stored(history)
                # The posts as they are now: the edits and deletes up to the join are in them.
                self.stream.resume_after(max(self.stream.last_seq, joined_at))
        elif after == joined_at:
            # It holds everything up to where the live stream starts: nothing to read, and
            # nothing after it pruned. Many of a restart's reconnecting sockets are such; the
            # two reads skipped took daphne from 2.3-3.2 to 1.4-2.3 ms of CPU per returning
            # client in a 1,000-client storm (docs/benchmarks.md, "Reconnect storm").
            self.stream.resume_after(after)
        else:
            # The catch-up's first page also says whether history after `after` was pruned.
            page = await self.rows_after(after, stream.CATCH_UP_PAGE)
            await retention.tell_if_pruned(
                self.socket, room_id=local.room_id, after=after, page=page
            )
            self.stream.resume_after(after)
            await self.stream.catch_up(first=page)
        if protocol.wants_synced(query):
            await self.stream.drain_backlog()
            synced: protocol.SyncedFrame = {"type": "synced", "last_seq": self.stream.last_seq}
            self.socket.send_text(protocol.encode(synced))
        await self.stream.go_live()
        await rosters.get().enter(
            self,
            room=self.room_name,
            socket_id=self.socket_id,
            person_key=self.person.key,
            name=self.person.name,
        )
        self.present = True
        # Nothing reads the handshake's scope from here on: holding it would keep its headers,
        # cookies and session for the socket's life (~0.9 KB an idle connection). Anything
        # that did read it later would fail loudly (KeyError), not quietly.
        self.scope = {}

    async def handshake_rate_allows(self) -> bool:
        """Check the handshake rate of the socket's address; refuse the socket past it."""
        throttle = throttles.get()
        if not throttle.enabled:
            return True
        refused = await throttle.handshake(address=self.address)
        if refused is None:
            return True
        await self.refuse_too_many(refused)
        return False

    async def admitted(self) -> bool:
        """Check the socket caps (per person and per address); refuse the socket past them."""
        throttle = throttles.get()
        if not throttle.enabled:
            return True
        refused = await throttle.socket_opened(
            socket_id=self.socket_id, person=self.person.key, address=self.address
        )
        if refused is None:
            self.counted = True
            return True
        await self.refuse_too_many(refused)
        return False

    async def refuse_too_many(self, refused: Refused) -> None:
        metrics.refused("handshake")
        await self.refuse_handshake(
            _rate_limited(refused, "Too many connections"), protocol.CLOSE_RATE_LIMITED
        )

    async def refuse_handshake(self, error: ProtocolError, code: int) -> None:
        """Accept only to say why, in a frame a browser can read (a refused handshake is a
        bare HTTP 403), then close with `code`, which tells the client what to do next."""
        await self.accept()
        metrics.error_sent(error.code)
        await self.send(text_data=protocol.encode(protocol.error_frame(error)))
        await self.close(code=code)

    @property
    def user_id(self) -> int | None:
        """The signed-in user's id; None for a guest (or before the handshake named anyone)."""
        person = getattr(self, "person", None)
        user = person.user if person is not None else None
        return user.pk if user is not None else None

    async def recheck_access(self) -> None:
        """From the hub: access to this room changed for someone; close if it was this one."""
        if self.close_sent or self.local is None:
            return
        decision = await db_read(access.may_enter)(self.person.user, self.room_name)
        if not decision.allowed:
            self.send_error(ProtocolError(ErrorCode.FORBIDDEN, decision.detail))
            self.leave()
            await self.close(code=protocol.CLOSE_FORBIDDEN)

    async def disconnect(self, code: int) -> None:
        """Leave the room (`__call__` makes sure of it, whatever ended the socket)."""
        self.leave()

    def leave(self) -> None:
        """Leave the hub's room and stop every task of this socket; safe to call twice."""
        lifecycle.closed(self)
        if self.local is not None:
            hubs.get().leave(self, room_name=self.room_name)
            self.local = None
        self.stream.close()
        if self.socket is not None:
            self.socket.close()
        if self.writable is not None:
            self.writable.set()
        if self.present:
            self.present = False
            rosters.get().leave(self, room=self.room_name, socket_id=self.socket_id)
        if self.counted:
            self.counted = False
            release = asyncio.ensure_future(
                throttles.get().socket_closed(
                    socket_id=self.socket_id, person=self.person.key, address=self.address
                )
            )
            _releasing.add(release)
            release.add_done_callback(_releasing.discard)

    def deliver(self, frames: list[OutFrame], payload: bytes | None, changes: bool) -> None:
        """From the hub: the room's next messages, for this socket's stream."""
        self.stream.deliver(frames, payload, changes)

    def send_presence(self, text: str) -> None:
        """From the roster: who is in the room (all of them at first, then changes)."""
        if self.aware and self.socket is not None:
            self.socket.send_text(text)

    def typing(self, name: str, *, sender: str) -> None:
        """From the hub: someone in the room is typing (never told to the typist's own socket)."""
        if self.aware and sender != self.socket_id and self.stream.live and self.socket:
            frame: protocol.TypingFrame = {"type": "typing", "name": name}
            self.socket.send_text(protocol.encode(frame))

    async def typing_started(self) -> None:
        """Tell the room this socket's person is typing: at most once per TYPING_INTERVAL."""
        now = asyncio.get_running_loop().time()
        wait = self.typed_at + protocol.TYPING_INTERVAL - TYPING_LEEWAY - now
        if wait > 0:
            error = ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"At most one typing frame per {protocol.TYPING_INTERVAL:.0f} s.",
                retry_after=wait,
            )
            metrics.refused("typing")
            await self.refuse(error, None)
            return
        self.typed_at = now
        writers.get().publish_typing(self.room_name, self.person.name, sender=self.socket_id)

    def room_gone(self) -> None:
        """From the hub: the room was deleted. Close, so the client starts afresh."""
        self.leave()
        self.close_soon(protocol.CLOSE_ROOM_GONE)

    def close_soon(self, code: int) -> None:
        """Close the socket with `code`, from code that cannot wait."""
        if not self.close_sent and self.closing is None:
            self.closing = asyncio.ensure_future(self.close(code=code))

    async def rows_after(self, after: int, limit: int) -> list[MessageRow]:
        """For the stream: stored messages of this room after `after` (none before it exists)."""
        room_id = await self.stored_room_id()
        if room_id is None:
            return []
        return await db_read(selectors.rows_after)(room_id=room_id, after=after, limit=limit)

    @property
    def room_id(self) -> int | None:
        """The room's id in the database, as far as this process knows; None before."""
        return self.local.room_id if self.local is not None else None

    async def stored_room_id(self) -> int | None:
        """The room's id, from the database if this process has not heard of it yet.

        A room's first message, posted in another process, reaches this one's hub through
        Redis a moment later (or at the reconcile, if Redis is out); the database knows now.
        """
        if self.local is not None and self.local.room_id is None:
            positions = await db_read(selectors.rooms_positions)(names=[self.room_name])
            if self.room_name in positions and self.local.room_id is None:
                self.local.room_id = positions[self.room_name][0]
        return self.room_id

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one frame from the browser."""
        if self.close_sent or lifecycle.draining:
            return
        if text_data is None:
            if bytes_data is not None and len(bytes_data) > protocol.MAX_FRAME_BYTES:
                await self.close(code=protocol.CLOSE_TOO_BIG)
                return
            self.send_error(
                ProtocolError(ErrorCode.BINARY_NOT_SUPPORTED, "Frames must be JSON text.")
            )
            return
        if protocol.frame_too_big(text_data):
            await self.close(code=protocol.CLOSE_TOO_BIG)
            return
        try:
            frame = protocol.parse_client_frame(text_data)
        except ProtocolError as error:
            self.send_error(error)
            return
        if isinstance(frame, protocol.PostMessage | protocol.EditMessage | protocol.DeleteMessage):
            await self.post(frame)
        elif isinstance(frame, protocol.HistoryRequest):
            await self.history(frame)
        else:
            await self.typing_started()

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the socket (once), and take no more frames from it."""
        if not self.close_sent:
            self.close_sent = True
            if self.socket is not None:
                await self.socket.flush()
            await super().close(code=code, reason=reason)

    async def post(
        self, frame: protocol.PostMessage | protocol.EditMessage | protocol.DeleteMessage
    ) -> None:
        """Queue a post (or an edit or a delete of one) for storing; the writer acknowledges
        it, then broadcasts it. Changes count against the same limits as posts."""
        throttle = throttles.get()
        if throttle.enabled:
            refused = await throttle.post(person=self.person.key, address=self.address)
            if refused is None and self.room_id is None:
                refused = await throttle.new_room(address=self.address)
            if refused is not None:
                metrics.refused("post")
                await self.refuse(_rate_limited(refused, "Too many posts"), frame.client_id)
                return
        if self.in_flight >= MAX_IN_FLIGHT:
            # Stop reading this socket until the writer catches up with it.
            self.writable = asyncio.Event()
            await self.writable.wait()
            if self.local is None:
                return  # closed meanwhile
        self.in_flight += 1
        if isinstance(frame, protocol.PostMessage):
            kind, target_seq = Message.Kind.MESSAGE, None
        else:
            kind = (
                Message.Kind.EDIT
                if isinstance(frame, protocol.EditMessage)
                else Message.Kind.DELETE
            )
            target_seq = frame.seq
        post = services.NewPost(
            room_name=self.room_name,
            room_id=self.room_id,
            author=self.person.user,  # type: ignore[arg-type]
            author_name=self.person.name,
            body=frame.message if not isinstance(frame, protocol.DeleteMessage) else "",
            client_id=frame.client_id,
            guest_id=self.person.guest_id,
            kind=kind,
            target_seq=target_seq,
            moderator=self.moderator,
        )
        writers.get().submit(self.room_name, post, self)

    def post_settled(self, outcome: Outcome, *, client_id: str | None) -> None:
        """From the writer: how storing a post of this socket went (before the broadcast)."""
        self.in_flight -= 1
        if self.writable is not None:
            self.writable.set()
            self.writable = None
        if isinstance(outcome, services.Stored):
            if self.local is not None and self.local.room_id is None:
                # The room's first message created it: every socket of the room here knows.
                self.local.room_id = outcome.message.room_id
            if client_id is not None and self.socket is not None:
                seq = outcome.message.seq
                ack: protocol.AckFrame = {"type": "ack", "client_id": client_id, "seq": seq}
                self.socket.send_text(protocol.encode(ack))
        elif isinstance(outcome, services.Refused):
            self.send_error(ProtocolError(outcome.code, outcome.detail), client_id=client_id)
        elif isinstance(outcome, RoomGone):
            self.room_gone()
        elif isinstance(outcome, Failed):
            if outcome.permanent:
                error = ProtocolError(ErrorCode.REJECTED, "The message cannot be stored.")
            else:
                error = ProtocolError(
                    ErrorCode.NOT_STORED, "The message was not stored; send it again."
                )
            self.send_error(error, client_id=client_id)

    async def history(self, request: protocol.HistoryRequest) -> None:
        """Answer a history request with a page of stored messages, cut to the frame limit."""
        assert self.socket is not None
        throttle = throttles.get()
        if throttle.enabled:
            refused = await throttle.history(person=self.person.key, address=self.address)
            if refused is not None:
                metrics.refused("history")
                await self.refuse(_rate_limited(refused, "Too many history requests"), None)
                return
        # A client that asks and never reads waits here, not in the server's memory.
        await self.socket.drained()
        rows: list[MessageRow] = []
        room_id = await self.stored_room_id()
        if room_id is not None and request.before is not None:
            rows = await db_read(selectors.rows_before)(
                room_id=room_id, before=request.before, limit=request.limit
            )
        elif room_id is not None and request.after is not None:
            rows = await db_read(selectors.rows_after)(
                room_id=room_id, after=request.after, limit=request.limit
            )
        texts = [stream.encode(row) for row in rows]
        self.socket.send_text(
            protocol.history_reply(texts, keep="newest" if request.before else "oldest")
        )

    async def refuse(self, error: ProtocolError, client_id: str | None) -> None:
        """Answer a rate-limited frame; close a socket that keeps sending regardless."""
        self.send_error(error, client_id=client_id)
        if self.flood.refused():
            await self.close(code=protocol.CLOSE_RATE_LIMITED)

    def send_error(self, error: ProtocolError, *, client_id: str | None = None) -> None:
        """Tell this socket (and no one else) why its frame was refused."""
        if self.socket is not None:
            metrics.error_sent(error.code)
            self.socket.send_text(protocol.encode(protocol.error_frame(error, client_id=client_id)))


def _rate_limited(refused: Refused, what: str) -> ProtocolError:
    return ProtocolError(
        ErrorCode.RATE_LIMITED,
        f"{what} ({refused.limit}); try again in {refused.retry_after:.1f} s.",
        retry_after=refused.retry_after,
    )


class RefuseConsumer(AsyncWebsocketConsumer):
    """Refuses every handshake: the path is not a valid room."""

    channel_layer_alias = None  # nothing to receive, so no channel to create

    async def connect(self) -> None:
        """Close before accepting, which daphne answers with HTTP 403."""
        await self.close()
