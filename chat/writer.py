"""Group commit: posts from every socket of a process are stored together, then published.

A post waits at most for the transaction in progress: while one batch is being written, the
posts that arrive meanwhile queue up and go into the next. At low load a batch is one post; in
a burst, one transaction and one publish per room carry dozens. Publishing after the commit is
what makes "stored before broadcast" hold; one publish per room per batch is what keeps Redis
round trips off the per-message cost.

A batch is shared by strangers, so no post may fail it for the others: a batch the database
refuses is split in halves and retried until the post at fault is found and refused alone
(a database that is down fails every post at once, without splitting). Posters hear the outcome
through a plain method call that never waits on a socket, and a failure there is that socket's
alone; the two tasks catch everything, and if one ends anyway the next post restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.layers import get_channel_layer
from django.db import InterfaceError, OperationalError

from chat import metrics, protocol, services
from chat.db import db_sync_to_async
from chat.events import batch_event, typing_event
from chat.rooms import group_name
from chat.runtime import PerLoop

logger = logging.getLogger(__name__)

# Posts per transaction at most; more wait for the next one.
MAX_BATCH = 500
# A publish that takes longer than this (Redis frozen, say) is given up: the message is stored
# and acknowledged, and every process's reconcile delivers it from the database.
PUBLISH_TIMEOUT = 2.0
# Deliveries from the database wait at most this long for the batch in flight to settle.
SETTLE_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class Failed:
    """A post that was not stored: `permanent` if sending it again cannot help."""

    permanent: bool


class RoomGone:
    """A post for a room that was deleted."""


ROOM_GONE = RoomGone()
Outcome = services.Stored | services.Refused | Failed | RoomGone


class Poster(Protocol):
    """Whoever submitted a post (ChatConsumer), told how storing it went."""

    def post_settled(self, outcome: Outcome, *, client_id: str | None) -> None:
        """The post's outcome. Called before the broadcast; must not wait on anything."""


@dataclass
class _Queued:
    room_name: str
    post: services.NewPost
    poster: Poster


# Stored events on their way to the channel layer: room (name, id) → [(seq, frame, plain), ...]
# (`plain`: a post, which the tutorial's clients are sent too; not an edit or a delete).
Fresh = dict[tuple[str, int], list[tuple[int, str, bool]]]


def _transient(error: BaseException) -> bool:
    """True if the database itself failed (down, locked), not one post in the batch."""
    return isinstance(error, OperationalError | InterfaceError)


@dataclass
class PostWriter:
    """Stores queued posts in batches and publishes each batch to its rooms' groups.

    Storing and publishing are two tasks joined by a queue, so batch k+1 is being written while
    batch k is being published; batches waiting to be published are merged, one event per room.
    """

    queue: list[_Queued] = field(default_factory=list)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    outbox: asyncio.Queue[Fresh] = field(default_factory=asyncio.Queue)
    publisher: asyncio.Task[None] | None = None
    # Set once the batch being stored has been settled (see `settled`); None before any.
    storing: asyncio.Event | None = None
    # Typing notices being published (strong references to their tasks).
    notices: set[asyncio.Future[None]] = field(default_factory=set)

    def submit(self, room_name: str, post: services.NewPost, poster: Poster) -> None:
        """Queue a post for the next batch; `poster` hears the outcome, before the broadcast.

        Returns at once, so a socket's next frame is read while this one is being stored: that
        is what lets one busy sender's posts share a transaction. Posts are stored in the order
        they are submitted.
        """
        self.queue.append(_Queued(room_name, post, poster))
        self.wakeup.set()
        # Each task is (re)started on its own: a writer that ended must not bring a second
        # publisher, which would publish batches out of order.
        if self.task is None or self.task.done():
            self._log_end(self.task)
            self.task = asyncio.create_task(self._run(), name="chat-post-writer")
        if self.publisher is None or self.publisher.done():
            self._log_end(self.publisher)
            self.publisher = asyncio.create_task(self._run_publisher(), name="chat-publisher")

    @staticmethod
    def _log_end(task: asyncio.Task[None] | None) -> None:
        if task is not None and not task.cancelled() and task.exception() is not None:
            logger.error("a writer task ended; restarting it", exc_info=task.exception())

    async def _run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
                try:
                    await self._write(batch)
                except Exception:
                    # Not the database (that is handled in _store): a bug. The batch's posters
                    # have heard nothing yet, or some have; tell the rest, and go on.
                    logger.exception("writing a batch of %d posts failed", len(batch))
                    for queued in batch:
                        self._settle(queued, Failed(permanent=False))

    async def _write(self, batch: list[_Queued]) -> None:
        self.storing = storing = asyncio.Event()
        try:
            outcomes = await self._store(batch)
            fresh: Fresh = defaultdict(list)
            for queued, outcome in zip(batch, outcomes, strict=True):
                self._settle(queued, outcome)
                if isinstance(outcome, services.Stored) and outcome.created:
                    message = outcome.message
                    frame = protocol.encode(protocol.stored_frame(message))
                    plain = protocol.shown_to_tutorial_clients(message)
                    fresh[queued.room_name, message.room_id].append((message.seq, frame, plain))
        finally:
            storing.set()
        metrics.batch_stored(len(batch), outcomes, fresh.items())
        if fresh:
            self.outbox.put_nowait(fresh)

    async def settled(self) -> None:
        """Wait until the batch being stored now (if any) has told its posters.

        Whatever delivers from the database (the hub's reconcile and gap fill) waits here
        first: a post committed but not yet acknowledged would otherwise reach its poster as a
        message before its `ack`, which the protocol promises comes first.
        """
        storing = self.storing
        if storing is not None and not storing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(storing.wait(), SETTLE_WAIT)

    async def _store(self, batch: list[_Queued]) -> list[Outcome]:
        """Store a batch; if the database refuses it, find the posts at fault by halving."""
        try:
            results = await db_sync_to_async(services.messages_create)(
                [queued.post for queued in batch]
            )
        except Exception as error:
            if _transient(error) or len(batch) == 1:
                permanent = not _transient(error)
                logger.warning(
                    "storing %d post(s) failed (%s): %r",
                    len(batch),
                    "refused" if permanent else "database unavailable",
                    error,
                )
                return [Failed(permanent=permanent)] * len(batch)
            half = len(batch) // 2
            return await self._store(batch[:half]) + await self._store(batch[half:])
        return [ROOM_GONE if result is None else result for result in results]

    @staticmethod
    def _settle(queued: _Queued, outcome: Outcome) -> None:
        try:
            queued.poster.post_settled(outcome, client_id=queued.post.client_id)
        except Exception:
            logger.exception("telling a poster its outcome failed")

    async def _run_publisher(self) -> None:
        while True:
            fresh = await self.outbox.get()
            while not self.outbox.empty():
                for room, items in self.outbox.get_nowait().items():
                    fresh.setdefault(room, []).extend(items)
            try:
                await self._publish(fresh)
            except Exception:
                logger.exception("publishing a batch failed; the reconcile will deliver it")

    async def _publish(self, fresh: Fresh) -> None:
        sends = [
            _group_send(group_name(room), batch_event(room, room_id, items))
            for (room, room_id), items in fresh.items()
        ]
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        for (room, _), outcome in zip(fresh, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Stored and acknowledged already: every process's reconciler will deliver it.
                logger.warning("publishing to room %s failed: %r", room, outcome)

    def publish_typing(self, room: str, name: str, *, sender: str) -> None:
        """Tell every process's sockets in `room` (but `sender`) that `name` is typing.

        Nothing is stored and nothing waits: a notice that is lost is simply not shown.
        """
        task = asyncio.ensure_future(
            _group_send(group_name(room), typing_event(room, name, sender))
        )
        self.notices.add(task)
        task.add_done_callback(self._notice_sent)

    def _notice_sent(self, task: asyncio.Future[None]) -> None:
        self.notices.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.debug("a typing notice was not published: %r", task.exception())

    async def close(self) -> None:
        """Stop the tasks; posts still queued are dropped (their senders resend them)."""
        tasks = [task for task in (self.task, self.publisher) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.queue.clear()


async def _group_send(group: str, event: Any) -> None:
    """Publish `event` to `group`, giving up after PUBLISH_TIMEOUT.

    The channel layer's call is made here, inside the task that awaits it: a task cancelled
    before it ran (a loop shutting down) then leaves no un-awaited coroutine of the layer's.
    """
    await asyncio.wait_for(get_channel_layer().group_send(group, event), PUBLISH_TIMEOUT)


writers: PerLoop[PostWriter] = PerLoop(PostWriter)
