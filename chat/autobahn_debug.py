"""Values autobahn formats for debug log lines on every connection and frame, logged or not.

autobahn (daphne's WebSocket library) writes debug lines as
`self.log.debug("{func} sent {data_len} bytes", func=hltype(self.sendData), ...)`: the
arguments are computed before txaio's logger drops the line, and under daphne debug is never
logged. Per new connection `pprint.pformat` of its ~30 options: 145 of the 190 µs that making
one costs autobahn, about a tenth of the CPU a reconnect storm costs daphne. Per frame read and
per `sendData` (every write to a socket, so every delivery) `hltype` and `hlval`, which build
qualified names and colour codes: about a quarter of what reading a post's frame costs
autobahn (docs/benchmarks.md, "Reconnect storm" and "Per-post cost against picows").

`install_under_daphne` (mysite/asgi.py) replaces those three functions, in the two autobahn
modules that call them for nothing else than log arguments, by stand-ins that return the call
itself, computed only if the line is formatted: a debug line reads the same when it is written.
chat/tests/test_autobahn_debug.py checks on the installed autobahn that every call of them there
is an argument of a log call, so an upgrade that used one for anything else fails the tests
rather than misbehaving. A name that no longer holds the original function is left alone.
"""

from __future__ import annotations

import pprint
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from autobahn import util as autobahn_util
from autobahn.twisted import websocket as autobahn_twisted
from autobahn.websocket import protocol as autobahn_protocol

# Module → the names of formatting functions it calls only to build debug-line arguments.
DEFERRED: dict[ModuleType, tuple[str, ...]] = {
    autobahn_protocol: ("pformat", "hltype", "hlval"),
    autobahn_twisted: ("hltype", "hlval"),
}
_ORIGINALS: dict[str, Callable[..., Any]] = {
    "pformat": pprint.pformat,
    "hltype": autobahn_util.hltype,
    "hlval": autobahn_util.hlval,
}


class DeferredCall:
    """`function(*args, **kwargs)`, called only when it is formatted into a log line."""

    __slots__ = ("args", "function", "kwargs")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], kwargs: Any) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def __str__(self) -> str:
        return str(self.function(*self.args, **self.kwargs))

    def __repr__(self) -> str:
        return repr(self.function(*self.args, **self.kwargs))

    def __format__(self, spec: str) -> str:
        return format(self.function(*self.args, **self.kwargs), spec)


class Deferring:
    """Stands in for a formatting function: returns the call, not its result."""

    __slots__ = ("function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> DeferredCall:
        return DeferredCall(self.function, args, kwargs)


def install_under_daphne() -> None:
    """Under daphne (its server module loaded): defer autobahn's debug-line formatting."""
    if "daphne.server" in sys.modules:
        defer_debug_formatting()


def defer_debug_formatting() -> None:
    """Replace each function of DEFERRED, where it still is the original, by a `Deferring`."""
    for module, names in DEFERRED.items():
        for name in names:
            if getattr(module, name, None) is _ORIGINALS[name]:
                setattr(module, name, Deferring(_ORIGINALS[name]))
    # The one use that is not a log argument: what autobahn's timings (off unless a protocol
    # sets trackTimings; daphne does not) print as. It must stay a str.
    timings = getattr(autobahn_protocol, "Timings", None)
    if timings is not None:
        timings.__str__ = _timings_text


def _timings_text(self: Any) -> str:
    """autobahn's `Timings.__str__`, with the real pformat."""
    return pprint.pformat(self._timings)


# Where autobahn calls a deferred function for more than a log argument, each mended above.
MENDED = {"pformat": "Timings.__str__"}
