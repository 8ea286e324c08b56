"""Prometheus metrics of one process, and the hooks the socket path calls to count.

Each daphne process keeps its own registry (prometheus-client's default one) and serves it at
`/metrics` (mysite/health.py); Prometheus scrapes every process. There is no shared
multiprocess directory: daphne processes are independent servers, not forked workers, and
per-process series are what tell one sick process from the rest.

The hooks are cheap by construction: each is called once per batch (a group commit, a room's
delivery, a catch-up slice), never once per frame per socket, and adds whole counts with
`inc(n)`. Gauges that describe state (open sockets, rooms) are computed when scraped, so the
hot path pays nothing for them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

if TYPE_CHECKING:
    from chat.transport import OutFrame
    from chat.writer import Outcome

# The `_created` timestamp series double what is scraped and nothing here reads them.
disable_created_metrics()

# --- Counted on the hot path (once per batch) --------------------------------------------------
POSTS = Counter(
    "chat_posts_total",
    "Posts settled by the group commit, by outcome (stored, duplicate, not_stored, rejected, "
    "room_gone).",
    ["outcome"],
)
BATCH_SIZE = Histogram(
    "chat_commit_batch_posts",
    "Posts per group-commit transaction.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
FRAMES = Counter(
    "chat_frames_delivered_total",
    "Message frames handed to sockets: live (by the hub, frames x sockets of the room) or "
    "catch_up (history and resume, read from the database).",
    ["path"],
)
LATENCY = Histogram(
    "chat_store_to_write_seconds",
    "From a post's commit to its frames being written to this process's sockets (posts "
    "stored by this process only).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
GAP_FILLS = Counter(
    "chat_gap_fills_total",
    "Batches that arrived after a gap, filled from the database before delivery.",
)
RECONCILES = Counter(
    "chat_reconcile_catch_ups_total",
    "Rooms the periodic reconcile found behind the database (a publish that was lost).",
)
SLOW_READERS = Counter(
    "chat_slow_readers_dropped_total",
    "Sockets dropped because their reader fell too far behind.",
)
ERRORS = Counter("chat_error_frames_total", "Error frames sent to clients, by code.", ["code"])
REFUSALS = Counter(
    "chat_rate_limit_refusals_total",
    "Requests refused by a rate limit or socket cap, by what was refused.",
    ["what"],
)
PRUNED = Counter(
    "chat_resumes_into_pruned_total",
    "Resumes from a position inside a pruned range (told with a `pruned` frame).",
)

_LIVE = FRAMES.labels("live")
_CATCH_UP = FRAMES.labels("catch_up")
_STORED = POSTS.labels("stored")

# Commit time of the latest batch stored here for each room: (room name, last seq) → monotonic
# time. Read back when the hub delivers that seq; bounded, since a room may be delivered
# elsewhere only (its sockets left meanwhile).
_committed: dict[tuple[str, int], float] = {}
_COMMITTED_MAX = 10_000


def batch_stored(batch_size: int, outcomes: Sequence[Outcome], fresh: Iterable[tuple]) -> None:
    """The writer stored a batch: its size, each post's outcome, and the new rows by room.

    `fresh` is the writer's {(room name, room id): [(seq, frame), ...]} items.
    """
    BATCH_SIZE.observe(batch_size)
    now = time.monotonic()
    new = 0
    for (room_name, _), items in fresh:
        new += len(items)
        _committed[room_name, items[-1][0]] = now
    if len(_committed) > _COMMITTED_MAX:
        _committed.clear()
    _STORED.inc(new)
    if new != batch_size:
        _count_others(outcomes)


def _count_others(outcomes: Sequence[Outcome]) -> None:
    """Count what was not newly stored (rare: a resend, a refusal, the database down)."""
    from chat import services, writer

    for outcome in outcomes:
        if isinstance(outcome, services.Stored):
            if not outcome.created:
                POSTS.labels("duplicate").inc()
        elif isinstance(outcome, writer.Failed):
            POSTS.labels("rejected" if outcome.permanent else "not_stored").inc()
        else:
            POSTS.labels("room_gone").inc()


def delivered(room_name: str, frames: list[OutFrame], sockets: int) -> None:
    """The hub handed a room's consecutive frames to its `sockets` local sockets."""
    _LIVE.inc(len(frames) * sockets)
    committed = _committed.pop((room_name, frames[-1].seq), None)
    if committed is not None:
        LATENCY.observe(time.monotonic() - committed)


def caught_up(frames: int) -> None:
    """A socket was sent a slice of stored messages (history or resume)."""
    _CATCH_UP.inc(frames)


def gap_filled() -> None:
    """The hub filled a gap before a batch from the database."""
    GAP_FILLS.inc()


def reconciled() -> None:
    """The reconcile found a room behind the database."""
    RECONCILES.inc()


def slow_reader_dropped() -> None:
    """A socket was dropped for not reading."""
    SLOW_READERS.inc()


def error_sent(code: str) -> None:
    """An error frame with `code` was sent."""
    ERRORS.labels(code).inc()


def refused(what: str) -> None:
    """A rate limit or cap refused `what` (handshake, post, history, typing)."""
    REFUSALS.labels(what).inc()


def resumed_into_pruned() -> None:
    """A client resumed from a position whose messages were pruned."""
    PRUNED.inc()


def _open_sockets() -> float:
    from chat import lifecycle

    return float(len(lifecycle.sockets))


def _local_rooms() -> float:
    from chat.fanout import hubs

    return float(
        sum(
            1
            for hub in list(hubs.instances.values())
            for room in hub.rooms.values()
            if room.members
        )
    )


Gauge("chat_open_sockets", "Chat sockets open in this process.").set_function(_open_sockets)
Gauge("chat_local_rooms", "Rooms with at least one socket in this process.").set_function(
    _local_rooms
)
