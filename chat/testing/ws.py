"""Helpers for consumer tests that drive the real ASGI application in-process."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from channels.testing import WebsocketCommunicator

ORIGIN = (b"origin", b"http://localhost")

Connect = Callable[..., Awaitable[WebsocketCommunicator]]


async def receive(communicator: WebsocketCommunicator, wait: float = 3) -> dict[str, Any]:
    """The next frame a communicator was sent, decoded."""
    frame = await communicator.receive_json_from(timeout=wait)
    assert isinstance(frame, dict)
    return frame
