"""One instance of a service per event loop (a daphne process has one; each test has its own)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    """Lazily builds one T per running event loop and forgets it with the loop."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self.instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """The instance for the running loop, created on first use."""
        loop = asyncio.get_running_loop()
        instance = self.instances.get(loop)
        if instance is None:
            instance = self.instances[loop] = self.factory()
        return instance

    def pop(self) -> T | None:
        """Forget the running loop's instance (if any) and return it."""
        return self.instances.pop(asyncio.get_running_loop(), None)
