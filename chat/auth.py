"""Who a socket's user is: Channels' auth middleware, without a database trip for guests."""

from __future__ import annotations

from typing import Any

from channels.auth import AuthMiddleware
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.contrib.auth.models import AnonymousUser


class GuestAwareAuthMiddleware(AuthMiddleware):
    """Channels' AuthMiddleware, except that a socket without a session cookie is anonymous at
    once.

    Channels resolves every socket's user on its database thread (`get_user`, a thread hop and
    a connection check) even when the browser sent no session cookie, and so has no session to
    look up. Guests (chat/people.py) never have one: their name is a signed cookie of its own.
    In a reconnect storm (docs/benchmarks.md) that hop was paid by every one of thousands of
    handshakes. A socket with a session cookie is resolved exactly as Channels does.
    """

    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        if scope["session"].session_key is None:
            scope["user"]._wrapped = AnonymousUser()
            return
        await super().resolve_scope(scope)


def auth_middleware_stack(inner: Any) -> BaseMiddleware:
    """`channels.auth.AuthMiddlewareStack`, with GuestAwareAuthMiddleware."""
    return CookieMiddleware(SessionMiddleware(GuestAwareAuthMiddleware(inner)))
