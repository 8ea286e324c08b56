"""Group commit: posts from every socket of a process are stored together, then published.

A post waits at most for the transaction in progress: while one batch is being written, the
posts that arrive meanwhile queue up and go into the next. At low load a batch is one post; in
a burst, one transaction and one publish per room carry dozens. Publishing after the commit is
what makes "stored before broadcast" hold; one publish per room per batch is what keeps Redis
round trips off the per-message cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from channels.layers import get_channel_layer

from chat import protocol, services
from chat.db import db_sync_to_async
from chat.models import Message
from chat.rooms import group_name
from chat.runtime import PerLoop

logger = logging.getLogger(__name__)

# The channel-layer event that carries a batch of one room's new messages between processes.
BATCH_EVENT = "chat.batch"
# Posts per transaction at most; more wait for the next one.
MAX_BATCH = 500


class Poster(Protocol):
    """Whoever submitted a post (ChatConsumer), told how storing it went."""

    async def stored(self, message: Message, *, client_id: str | None) -> None:
        """The post is stored as `message` (now, or earlier if it was a resend)."""

    async def store_failed(self, *, client_id: str | None) -> None:
        """The post could not be stored."""


@dataclass
class _Queued:
    room_name: str
    post: services.NewPost
    poster: Poster


# Stored messages on their way to the channel layer: room (name, id) → [[seq, frame], ...].
Fresh = dict[tuple[str, int], list[list[int | str]]]


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

    def submit(self, room_name: str, post: services.NewPost, poster: Poster) -> None:
        """Queue a post for the next batch; `poster` hears the outcome, before the broadcast.

        Returns at once, so a socket's next frame is read while this one is being stored: that
        is what lets one busy sender's posts share a transaction. Posts are stored in the order
        they are submitted.
        """
        self.queue.append(_Queued(room_name, post, poster))
        self.wakeup.set()
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(), name="chat-post-writer")
            self.publisher = asyncio.create_task(self._run_publisher(), name="chat-publisher")

    async def _run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
                await self._write(batch)

    async def _write(self, batch: list[_Queued]) -> None:
        try:
            results = await db_sync_to_async(services.messages_create)(
                [queued.post for queued in batch]
            )
        except Exception:
            logger.exception("storing %d posts failed", len(batch))
            for queued in batch:
                await queued.poster.store_failed(client_id=queued.post.client_id)
            return
        fresh: Fresh = defaultdict(list)
        for queued, (message, created) in zip(batch, results, strict=True):
            await queued.poster.stored(message, client_id=queued.post.client_id)
            if created:
                frame = protocol.encode(protocol.message_frame(message))
                fresh[queued.room_name, queued.post.room_id].append([message.seq, frame])
        if fresh:
            self.outbox.put_nowait(fresh)

    async def _run_publisher(self) -> None:
        while True:
            fresh = await self.outbox.get()
            while not self.outbox.empty():
                for room, items in self.outbox.get_nowait().items():
                    fresh.setdefault(room, []).extend(items)
            await self._publish(fresh)

    async def _publish(self, fresh: Fresh) -> None:
        layer = get_channel_layer()
        sends = [
            layer.group_send(
                group_name(room),
                {"type": BATCH_EVENT, "room": room, "room_id": room_id, "messages": items},
            )
            for (room, room_id), items in fresh.items()
        ]
        outcomes = await asyncio.gather(*sends, return_exceptions=True)
        for (room, _), outcome in zip(fresh, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                # Stored and acknowledged already: every process's reconciler will deliver it.
                logger.warning("publishing to room %s failed: %r", room, outcome)

    async def close(self) -> None:
        """Stop the tasks; posts still queued are dropped (their senders resend them)."""
        tasks = [task for task in (self.task, self.publisher) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.queue.clear()


writers: PerLoop[PostWriter] = PerLoop(PostWriter)
