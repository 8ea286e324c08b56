"""Who is talking: the one place that names the person behind a page or a socket.

Signed-in users are named by their username. A visitor who is not signed in is a guest: the
room page gives the browser a guest name in a signed cookie (no database row, so a scanner that
never keeps cookies cannot fill the session table), and the room's socket reads the same cookie,
so a page and its socket agree. A socket without the cookie (a script, say) is a fresh guest.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core import signing

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from django.http import HttpRequest, HttpResponse

GUEST_COOKIE = "chat_guest"
_GUEST_SALT = "chat.people.guest"
GUEST_COOKIE_MAX_AGE = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Person:
    """The author of what a page or a socket sends."""

    user: AbstractBaseUser | None
    name: str
    # A guest name that the browser does not hold yet: the page sets it as a cookie.
    new_guest: bool = False

    @property
    def key(self) -> str:
        """A stable id for limits: the user's id, or the guest's name."""
        return f"user:{self.user.pk}" if self.user is not None else f"guest:{self.name}"


def new_guest_name() -> str:
    """A fresh display name for a visitor who is not signed in."""
    return f"guest-{secrets.token_hex(3)}"


def person_for(user: AbstractBaseUser | AnonymousUser | None, cookies: Mapping[str, str]) -> Person:
    """Name whoever sends with this user (maybe anonymous) and these cookies."""
    if user is not None and user.is_authenticated:
        return Person(user=user, name=user.get_username())
    name = _guest_from_cookie(cookies.get(GUEST_COOKIE))
    if name is None:
        return Person(user=None, name=new_guest_name(), new_guest=True)
    return Person(user=None, name=name)


def person_for_scope(scope: Mapping[str, Any]) -> Person:
    """The person behind a WebSocket handshake (after Channels' auth middleware)."""
    return person_for(scope.get("user"), scope.get("cookies") or {})


def remember_guest(response: HttpResponse, request: HttpRequest, person: Person) -> None:
    """Give the browser the guest name it was just assigned, for its page and its sockets."""
    if person.new_guest:
        response.set_cookie(
            GUEST_COOKIE,
            signing.TimestampSigner(salt=_GUEST_SALT).sign(person.name),
            max_age=GUEST_COOKIE_MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure(),
        )


def _guest_from_cookie(value: str | None) -> str | None:
    if not value:
        return None
    try:
        name = signing.TimestampSigner(salt=_GUEST_SALT).unsign(value, max_age=GUEST_COOKIE_MAX_AGE)
    except signing.BadSignature:
        return None
    return name if name.startswith("guest-") else None
