"""/healthz, /readyz and /metrics: answered in front of Django, for probes and Prometheus.

They sit before Django on purpose. A load balancer probes a process by its address
(`Host: 10.0.0.5:8001`), which is not in ALLOWED_HOSTS, over plain http, which DJANGO_HTTPS
would redirect; and a probe every few seconds must cost no session, no middleware and no log
line. daphne's access log skips these paths too (mysite/logging.py).

- `/healthz`: 200 while the process serves HTTP at all.
- `/readyz`: 200 when the database and the channel layer each answer within READY_TIMEOUT;
  otherwise 503, with a JSON body naming what failed. 503 too while the process is stopping
  (chat/lifecycle.py), so that the load balancer stops sending it sockets. A change of
  readiness is logged once, not every probe.
- `/metrics`: this process's Prometheus registry (chat/metrics.py). Not public: with
  CHAT_METRICS_TOKEN set, only requests bearing `Authorization: Bearer <token>`; without it,
  only requests from a loopback address.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connections
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from chat import lifecycle
from chat import metrics as _metrics  # noqa: F401  (registers the chat's metrics)
from chat.transport import Receive, Scope, Send

logger = logging.getLogger("chat.health")

# Each dependency must answer a readiness probe within this long (seconds).
READY_TIMEOUT = 1.0
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# A group nobody joins: publishing to it is one round trip to Redis, seen by no one.
PROBE_GROUP = "chat.readiness-probe"

# Database probes run on a thread of their own, never on the chat's reader or writer threads:
# a database that hangs holds this thread, not the chat's. One at a time: a probe that finds
# the last one still running fails at once instead of queueing behind it.
_db_probe = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-ready-probe")
_db_probe_running: asyncio.Future[None] | None = None
_last_failed: list[str] | None = None


class ProbeEndpoints:
    """ASGI middleware: answers the probe paths itself, passes everything else on."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if path == "/healthz":
            await _respond(send, 200, b"ok\n", b"text/plain; charset=utf-8")
        elif path == "/readyz":
            status, body = await readiness()
            await _respond(send, status, json.dumps(body).encode(), b"application/json")
        else:
            await _metrics_response(scope, send)


async def readiness() -> tuple[int, dict[str, Any]]:
    """(status, body) of a readiness probe."""
    global _last_failed
    checks = dict(
        zip(
            ("database", "channel_layer"),
            await asyncio.gather(_check_database(), _check_channel_layer()),
            strict=True,
        )
    )
    if lifecycle.draining:
        checks["process"] = "stopping"
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed != _last_failed:
        if failed:
            logger.warning("not ready: %s", ", ".join(f"{n} ({checks[n]})" for n in failed))
        elif _last_failed is not None:
            logger.info("ready again")
        _last_failed = failed
    status = "unready" if failed else "ready"
    return (503 if failed else 200), {"status": status, "checks": checks, "failed": failed}


async def _check_database() -> str:
    global _db_probe_running
    if _db_probe_running is not None and not _db_probe_running.done():
        return "the previous check has not answered yet"
    loop = asyncio.get_running_loop()
    _db_probe_running = probe = loop.run_in_executor(_db_probe, _select_one)
    try:
        await asyncio.wait_for(asyncio.shield(probe), READY_TIMEOUT)
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT:g} s"
    except Exception as error:
        return _describe(error)
    return "ok"


def _select_one() -> None:
    connection = connections["default"]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        connection.close()
        raise


async def _check_channel_layer() -> str:
    layer = get_channel_layer()
    if layer is None:
        return "not configured"
    try:
        await asyncio.wait_for(layer.group_send(PROBE_GROUP, {"type": "probe"}), READY_TIMEOUT)
    except TimeoutError:
        return f"no answer within {READY_TIMEOUT:g} s"
    except Exception as error:
        return _describe(error)
    return "ok"


def _describe(error: BaseException) -> str:
    # The exception's class and first line: enough to act on, and no connection string.
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line}"[:200]


async def _metrics_response(scope: Scope, send: Send) -> None:
    refusal = metrics_refusal(scope)
    if refusal is not None:
        status, detail = refusal
        headers = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await _respond(send, status, detail.encode(), b"text/plain; charset=utf-8", headers)
        return
    await _respond(send, 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode())


def metrics_refusal(scope: Scope) -> tuple[int, str] | None:
    """Why a /metrics request is refused ((status, text)), or None to serve it."""
    token: str = getattr(settings, "CHAT_METRICS_TOKEN", "") or ""
    if token:
        given = dict(scope.get("headers", [])).get(b"authorization", b"")
        expected = f"Bearer {token}".encode()
        if hmac.compare_digest(given, expected):
            return None
        return 401, "A bearer token is required (CHAT_METRICS_TOKEN).\n"
    client = scope.get("client")
    if client and _is_loopback(client[0]):
        return None
    return 403, "Served only to loopback addresses unless CHAT_METRICS_TOKEN is set.\n"


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
