"""Which socket a log line is about: its connection id and room, on every line its task logs.

A socket's whole life runs in one task (ChatConsumer.__call__), so the consumer names itself
once, at the handshake, and every line logged from that task carries the name
(mysite/logging.py adds it to the record). Keyed by the task rather than held in a contextvar:
the hub's, writer's and roster's tasks are started from whichever socket's task first needs
them, and would inherit a contextvar, and with it the wrong socket's name, for good.
"""

from __future__ import annotations

import asyncio
import weakref

_sockets: weakref.WeakKeyDictionary[asyncio.Task[object], tuple[str, str]] = (
    weakref.WeakKeyDictionary()
)


def bind_socket(*, connection: str, room: str) -> None:
    """Name the running task's socket: its connection id and room."""
    task = asyncio.current_task()
    if task is not None:
        _sockets[task] = (connection, room)


def current() -> tuple[str, str] | None:
    """(connection id, room) of the socket whose task is running, if any."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop in this thread
        return None
    return _sockets.get(task) if task is not None else None
