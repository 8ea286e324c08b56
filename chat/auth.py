"""Who a socket's user is: its session cookie, resolved as Channels does, guests at once.

Channels' AuthMiddlewareStack (CookieMiddleware, SessionMiddleware, AuthMiddleware) does this
in three `async` layers that each copy the scope and stay suspended, frame and copy, for as
long as the socket is open. chat/entry.py instead calls `read_session_cookie` on daphne's own
scope before the consumer starts, and the consumer awaits `resolve_user` in its `connect`:
the same cookies, session and user, with nothing left behind per socket.

A socket without a session cookie is anonymous at once. Channels would resolve every socket's
user on its database thread (`get_user`, a thread hop and a connection check) even with no
session to look up; guests (chat/people.py) never have one, their name being a signed cookie
of its own. In a reconnect storm (docs/benchmarks.md) that hop was paid by every one of
thousands of handshakes. A socket with a session cookie is resolved by Channels' `get_user`.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from importlib import import_module
from typing import Any

from channels import auth as channels_auth
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie

Scope = MutableMapping[str, Any]

# AnonymousUser keeps no state of its own: every guest socket can share one.
ANONYMOUS = AnonymousUser()


def read_session_cookie(scope: Scope) -> None:
    """In place: `cookies`, and `session` if there is a session cookie (else `user`, a guest).

    The same values Channels' CookieMiddleware and SessionMiddleware put in their copies of
    the scope; a session key of the wrong shape counts as none, as SessionStore decides.
    """
    cookies: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            cookies = parse_cookie(value.decode("latin1"))
            break
    scope["cookies"] = cookies
    key = cookies.get(settings.SESSION_COOKIE_NAME)
    session = _session_store()(session_key=key) if key else None
    if session is None or session.session_key is None:
        scope["user"] = ANONYMOUS
    else:
        scope["session"] = session


async def resolve_user(scope: Scope) -> None:
    """Set `user` from the session (Channels' `get_user`, on the database thread) if unset."""
    if "user" not in scope:
        scope["user"] = await channels_auth.get_user(scope)


def _session_store() -> Any:
    return import_module(settings.SESSION_ENGINE).SessionStore
