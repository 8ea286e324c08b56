"""Database calls from async code, on a connection that stays open between calls.

Channels' `database_sync_to_async` closes the thread's connection before and after every call
when CONN_MAX_AGE is 0 (the right setting for Django's HTTP views under ASGI, which get a fresh
thread per request). On the chat's hot path that meant a new database connection per batch and
per history read — measured as ~70 ms of connection churn in front of the first message of a
burst. `db_sync_to_async` runs on the same single thread as `database_sync_to_async` (so it never
races with it) but keeps the connection; a connection that fails is closed, so the next call
opens a fresh one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync
from django.db import DatabaseError, connections

P = ParamSpec("P")
R = TypeVar("R")


class _KeepConnection(SyncToAsync[P, R]):
    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().thread_handler(loop, *args, **kwargs)
        except DatabaseError:
            for connection in connections.all(initialized_only=True):
                connection.close_if_unusable_or_obsolete()
            raise


def db_sync_to_async(func: Callable[P, R]) -> Callable[P, Any]:
    """`func` as a coroutine function, run in the thread-sensitive executor."""
    return _KeepConnection(func, thread_sensitive=True)
