"""Logging for the whole process: the chat, Django and daphne's access log, in one format.

`CHAT_LOG_FORMAT=json` writes one JSON object per line (python-json-logger), fit for a log
shipper; `text` (the default) writes one readable line. Either way:

- Lines logged by a socket's task carry its `connection` id and `room` (chat/logging_context.py).
- daphne's access log goes through the `daphne.access` logger, so it takes the same format;
  the probe paths (/healthz, /readyz, /metrics) are left out of it.
- A request with a Host that is not allowed (Django's `DisallowedHost`) is one WARNING line,
  not an ERROR with a traceback: it is a client's mistake or a scanner, not a fault here.

No message body is ever logged: the chat logs sizes, counts, codes and ids, never text a
person wrote (chat/tests/test_logs.py checks it).
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

from chat import logging_context

ACCESS_LOGGER = "daphne.access"
# Not worth a line each: probes come every few seconds from every load balancer and scraper.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class SocketContext(logging.Filter):
    """Adds `connection` and `room` to lines logged by a socket's task."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = logging_context.current()
        if context is not None:
            record.__dict__.update(connection=context[0], room=context[1])
        return True


class OneLineWarning(logging.Filter):
    """Turns a record into a WARNING without a traceback (for DisallowedHost)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = record.stack_info = None
        # Django attaches the request object; its repr adds nothing the message lacks.
        record.__dict__.pop("request", None)
        return True


class TextFormatter(logging.Formatter):
    """`LEVEL logger: message`, then the socket's connection id and room when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        connection = getattr(record, "connection", None)
        if connection is None:
            return text
        first, newline, rest = text.partition("\n")
        return (
            f"{first} [connection={connection} room={getattr(record, 'room', '')}]{newline}{rest}"
        )


def logging_config(*, fmt: str, level: str) -> dict[str, Any]:
    """The LOGGING setting: `fmt` is "json" or "text"; `level` is the chat's own level."""
    if fmt not in {"json", "text"}:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"CHAT_LOG_FORMAT={fmt!r} is neither json nor text")
    formatter: dict[str, Any]
    if fmt == "json":
        formatter = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "json_ensure_ascii": False,
        }
    else:
        formatter = {
            "()": "mysite.logging.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "socket": {"()": "mysite.logging.SocketContext"},
            "one_line_warning": {"()": "mysite.logging.OneLineWarning"},
        },
        "formatters": {"default": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["socket"],
            }
        },
        # One handler, at the root: whatever daphne's command line set up is replaced, and
        # every logger (chat, django, daphne, twisted) writes through it, once.
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": {
            "chat": {"level": level},
            # Django's own handlers (console when debugging, mail to ADMINS otherwise) off:
            # its lines go to the root's handler like everyone else's.
            "django": {"handlers": [], "level": "INFO", "propagate": True},
            "django.security.DisallowedHost": {"filters": ["one_line_warning"]},
        },
    }


def configure(config: dict[str, Any]) -> None:
    """LOGGING_CONFIG: apply LOGGING, and send Python warnings through it too.

    A warning printed straight to stderr would be the one line of a JSON log that is not JSON.
    """
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


# --- daphne's access log ------------------------------------------------------------------------


class AccessLog:
    """daphne's action logger, as lines of the `daphne.access` logger (probes left out).

    Same entries as daphne's own AccessLogGenerator (which writes NCSA lines straight to a
    stream, past logging): HTTP requests completed, and WebSocket handshakes and disconnects.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        path = details.get("path", "")
        if path in QUIET_PATHS or not self.logger.isEnabledFor(logging.INFO):
            return
        if protocol == "http" and action == "complete":
            request = f"{details['method']} {path}"
            status, size = details.get("status"), details.get("size")
        elif protocol == "websocket" and action in _WS_ACTIONS:
            request = f"{_WS_ACTIONS[action]} {path}"
            status = size = None
        else:
            return
        self.logger.info(
            '%s "%s" %s %s',
            details.get("client") or "-",
            request,
            status or "-",
            size or "-",
            extra={
                "client": details.get("client"),
                "request": request,
                "status": status,
                "size": size,
            },
        )


_WS_ACTIONS = {
    "connecting": "WSCONNECTING",
    "rejected": "WSREJECT",
    "connected": "WSCONNECT",
    "disconnected": "WSDISCONNECT",
}


def install_access_log() -> None:
    """Under daphne, once its reactor runs: route its access log through `AccessLog`.

    Only where daphne was writing one (verbosity 1 or `--access-log`); `-v 0` stays silent.
    """
    if "daphne.server" not in sys.modules or "twisted.internet.reactor" not in sys.modules:
        return
    from twisted.internet import reactor

    reactor.callWhenRunning(_replace_access_log, reactor)


def _replace_access_log(reactor: Any) -> None:
    for server in daphne_servers(reactor):
        if server.action_logger is not None:
            server.action_logger = AccessLog()


def daphne_servers(reactor: Any) -> list[Any]:
    """The daphne `Server`s listening in this reactor (reached through their ports' factory)."""
    from daphne.http_protocol import HTTPFactory
    from twisted.internet.interfaces import IListeningPort

    servers = []
    for reader in reactor.getReaders():
        factory = getattr(reader, "factory", None) if IListeningPort.providedBy(reader) else None
        if isinstance(factory, HTTPFactory) and factory.server not in servers:
            servers.append(factory.server)
    return servers
