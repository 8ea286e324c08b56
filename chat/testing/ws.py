"""Helpers for consumer tests that drive the real ASGI application in-process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from channels.testing import WebsocketCommunicator

ORIGIN = (b"origin", b"http://localhost")

Connect = Callable[..., Awaitable[WebsocketCommunicator]]


async def receive(
    communicator: WebsocketCommunicator, wait: float = 3, *, presence: bool = False
) -> dict[str, Any]:
    """The next frame a communicator was sent, decoded; presence frames only if asked for.

    Presence frames come on their own schedule (chat/roster.py), between any two others: a
    test about messages skips them, a test about presence asks for them.
    """
    while True:
        frame = await communicator.receive_json_from(timeout=wait)
        assert isinstance(frame, dict)
        if presence or frame.get("type") != "presence":
            return frame


async def next_of_type(
    communicator: WebsocketCommunicator, kind: str, wait: float = 3
) -> dict[str, Any]:
    """The next frame of type `kind` a communicator was sent, skipping any others."""
    while True:
        frame = await receive(communicator, wait, presence=kind == "presence")
        if frame["type"] == kind:
            return frame
