"""Database calls from async code, on connections that stay open between calls.

Channels' `database_sync_to_async` closes the thread's connection before and after every call
when CONN_MAX_AGE is 0 (the right setting for Django's HTTP views under ASGI, which get a fresh
thread per request). On the chat's hot path that meant a new database connection per batch and
per history read — measured as ~70 ms of connection churn in front of the first message of a
burst. So the chat keeps its connections, on two kinds of thread:

- `db_sync_to_async`: the single thread-sensitive thread (as `database_sync_to_async` uses, so
  it never races with it). The group commit writes here, and nothing slow may queue in front
  of it.
- `db_read`: a few reader threads of their own, for history, catch-up and reconcile reads. A
  socket catching up on 10,000 messages then never delays anyone's post, nor waits behind a
  write (SQLite runs in WAL mode and PostgreSQL has MVCC, so readers and the writer overlap).

A connection that fails is closed, so the next call opens a fresh one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync
from django.db import DatabaseError, connections

P = ParamSpec("P")
R = TypeVar("R")

# Reader threads, each with its own connection. Two: a catch-up and a history read overlap,
# and the writer keeps the other core's worth of the GIL.
READER_THREADS = 2


def _close_unusable() -> None:
    for connection in connections.all(initialized_only=True):
        connection.close_if_unusable_or_obsolete()


class _KeepConnection(SyncToAsync[P, R]):
    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().thread_handler(loop, *args, **kwargs)
        except DatabaseError:
            _close_unusable()
            raise


def db_sync_to_async(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` as a coroutine function, run in the thread-sensitive executor."""
    return _KeepConnection(func, thread_sensitive=True)


def _run_keeping_connection(func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    try:
        return func(*args, **kwargs)
    except DatabaseError:
        _close_unusable()
        raise


class _Readers:
    """Single-thread executors, used in turn, whose connections can be closed one by one."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._start()
        # A forked child (ChannelsLiveServerTestCase's server, say) inherits the executors but
        # not their threads, and would queue every read forever: it gets executors of its own.
        os.register_at_fork(after_in_child=self._start)

    def _start(self) -> None:
        self.executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"chat-db-read-{n}")
            for n in range(self.threads)
        ]
        self.turn = itertools.cycle(self.executors)

    async def run(self, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        loop = asyncio.get_running_loop()
        call = partial(_run_keeping_connection, func, *args, **kwargs)
        return await loop.run_in_executor(next(self.turn), call)

    def close_connections(self) -> None:
        """Close each reader thread's connection (tests drop their database afterwards)."""
        for executor in self.executors:
            executor.submit(connections.close_all).result()


readers = _Readers(READER_THREADS)


def db_read(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`func` as a coroutine function, run on a reader thread."""

    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return await readers.run(func, *args, **kwargs)

    return call
