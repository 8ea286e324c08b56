"""chat/autobahn_debug.py on the installed autobahn: the same debug lines, formatted lazily."""

from __future__ import annotations

import ast
import inspect
import os
import pprint
import subprocess
import sys
from typing import Any

import pytest
from autobahn import util as autobahn_util
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet.testing import StringTransport

from chat import autobahn_debug
from chat.testing.server import ROOT

LOG_LEVELS = {"trace", "debug", "info", "warn", "error", "critical", "failure"}


def _log_call_arguments(tree: ast.AST) -> set[int]:
    """ids of every node inside the arguments of a `<...>.log.<level>(...)` call."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LOG_LEVELS
            and isinstance(node.func.value, ast.Attribute)
            and node.func.value.attr == "log"
        ):
            for argument in [*node.args, *(keyword.value for keyword in node.keywords)]:
                inside.update(id(child) for child in ast.walk(argument))
    return inside


@pytest.mark.parametrize(
    ("module", "names"),
    list(autobahn_debug.DEFERRED.items()),
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_autobahn_calls_the_deferred_functions_only_for_log_arguments(
    module: Any, names: tuple[str, ...]
) -> None:
    tree = ast.parse(inspect.getsource(module))
    in_logs = _log_call_arguments(tree)
    uses = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and node.id in names and isinstance(node.ctx, ast.Load)
    ]
    assert uses, f"{module.__name__} no longer uses {names}: chat/autobahn_debug.py is stale"
    mended = _inside(tree, autobahn_debug.MENDED)
    elsewhere = [
        f"{node.id} at line {node.lineno}"
        for node in uses
        if id(node) not in in_logs and id(node) not in mended.get(node.id, set())
    ]
    assert not elsewhere, f"{module.__name__} uses these outside a log call: {elsewhere}"


def _inside(tree: ast.AST, where: dict[str, str]) -> dict[str, set[int]]:
    """name → ids of the nodes inside the method `where[name]` ("Class.method")."""
    found: dict[str, set[int]] = {}
    for name, qualified in where.items():
        class_name, method = qualified.split(".")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name == class_name:
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == method:
                        found.setdefault(name, set()).update(id(n) for n in ast.walk(item))
    return found


@pytest.mark.usefixtures("deferred")
def test_autobahns_timings_still_print_as_text() -> None:
    from autobahn.websocket.protocol import Timings

    timings = Timings()
    timings.track("onMessage")
    assert str(timings).startswith("{'onMessage': ")


def _factory() -> WebSocketFactory:
    """A factory configured as daphne's Server.run configures its own."""
    factory = WebSocketFactory(object(), server="Daphne")
    factory.setProtocolOptions(autoPingTimeout=20, allowNullOrigin=True, openHandshakeTimeout=30)
    return factory


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> None:
    """defer_debug_formatting() for one test; monkeypatch puts the originals back after it."""
    from autobahn.websocket.protocol import Timings

    for module, names in autobahn_debug.DEFERRED.items():
        for name in names:
            monkeypatch.setattr(module, name, getattr(module, name))
    monkeypatch.setattr(Timings, "__str__", Timings.__str__)
    autobahn_debug.defer_debug_formatting()


@pytest.mark.usefixtures("deferred")
def test_a_connection_and_its_frames_format_nothing_for_unwritten_debug_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_formatting(*args: object, **kwargs: object) -> str:
        raise AssertionError("formatted for a debug line nobody writes")

    for function in (pprint.pformat, autobahn_util.hltype, autobahn_util.hlval):
        deferring = autobahn_debug.Deferring(function)
        assert isinstance(deferring("x"), autobahn_debug.DeferredCall)
    for module, names in autobahn_debug.DEFERRED.items():
        for name in names:
            assert isinstance(getattr(module, name), autobahn_debug.Deferring), name
            monkeypatch.setattr(getattr(module, name), "function", no_formatting)

    protocol: Any = _factory().buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)  # pformat of the options
    protocol.sendData(b"\x81\x02ok")  # hltype and hlval, as for every delivery
    protocol.dataReceived(b"GET /")  # and for every read
    assert protocol.state == WebSocketProtocol.STATE_CONNECTING
    assert transport.value() == b"\x81\x02ok"


def test_a_written_debug_line_reads_as_before() -> None:
    options = [("openHandshakeTimeout", 30, "WebSocketFactory")] * 3
    for function, args in [
        (pprint.pformat, (options,)),
        (autobahn_util.hltype, (test_a_written_debug_line_reads_as_before,)),
        (autobahn_util.hlval, (1234,)),
    ]:
        call = autobahn_debug.Deferring(function)(*args)
        # As txaio's logger formats a line it writes.
        line = "\n{value} {value!s}".format(value=call)  # noqa: UP032
        assert line == f"\n{function(*args)} {function(*args)!s}"
        assert repr(call) == repr(function(*args))


def test_the_asgi_application_under_daphne_installs_it() -> None:
    """In a process as daphne's CLI makes it: daphne's server loaded, then the application."""
    code = (
        "import daphne.server, mysite.asgi\n"
        "from chat.autobahn_debug import DEFERRED, Deferring\n"
        "for module, names in DEFERRED.items():\n"
        "    for name in names:\n"
        "        assert isinstance(getattr(module, name), Deferring), (module, name)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mysite.settings", "DJANGO_DEBUG": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
