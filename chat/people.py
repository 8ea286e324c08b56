"""Who is talking: the one place that names the person behind a page or a socket.

Signed-in users are named by their username. A visitor who is not signed in is a guest: the
room page gives the browser a guest id and name in a signed cookie (no database row, so a
scanner that never keeps cookies cannot fill the session table), and the room's socket reads
the same cookie, so a page and its socket agree. A socket without the cookie (a script, say) is
a fresh guest. A guest may rename themselves (`validate_guest_name` says to what); their id
stays, so limits keep counting against the same person, and they stay marked as a guest
(`Person.is_guest`) wherever they are shown. With CHAT_REQUIRE_LOGIN there are no guests.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confusable_homoglyphs import confusables
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.exceptions import ValidationError

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
    from django.http import HttpRequest, HttpResponse

GUEST_COOKIE = "chat_guest"
# How a guest's `Person.key` starts (a signed-in user's starts "user:").
GUEST_KEY_PREFIX = "guest:"
_GUEST_SALT = "chat.people.guest"
GUEST_COOKIE_MAX_AGE = 365 * 24 * 3600
# What new_guest_name() makes; cookies from before renaming held just such a name.
_AUTO_GUEST_NAME = re.compile(r"guest-[0-9a-f]{6}")

GUEST_NAME_MIN_LENGTH = 2
GUEST_NAME_MAX_LENGTH = 32
GUEST_NAME_RULE = (
    f"{GUEST_NAME_MIN_LENGTH} to {GUEST_NAME_MAX_LENGTH} letters, digits, spaces, "
    "hyphens, underscores or dots."
)
_NAME_PUNCTUATION = frozenset(" -_.")
# Names that would pass for the site's staff or its own notices, whatever the case, accents
# of compatibility forms (NFKC) or separators in between ("Ad.Min", "ＳＹＳＴＥＭ"). Only three:
# every prefix reserved also refuses the real names that start with it.
RESERVED_NAME_PREFIXES = ("admin", "moderator", "system")
# Chosen names may not look like an automatic guest name ("guest-…", "Guest_…"), nor may
# registered usernames: `guest-3fa9c1` is always a guest who did not choose a name.
_GUEST_LOOKALIKE = re.compile(r"guest[-_.]", re.IGNORECASE)
_WORD_BREAKS = re.compile(r"[\s\-_.@+]+")


class SignInRequired(Exception):
    """CHAT_REQUIRE_LOGIN is on and whoever is asking has not signed in."""


def login_required_for_chat() -> bool:
    """True when only signed-in users may use the chat (CHAT_REQUIRE_LOGIN=1)."""
    return bool(getattr(settings, "CHAT_REQUIRE_LOGIN", False))


@dataclass(frozen=True, slots=True)
class Person:
    """The author of what a page or a socket sends."""

    user: AbstractBaseUser | None
    name: str
    # A guest's id never changes when they rename themselves (None for a signed-in user).
    guest_id: str | None = None
    # A guest name that the browser does not hold yet: the page sets it as a cookie.
    new_guest: bool = False

    @property
    def is_guest(self) -> bool:
        """True for a visitor who is not signed in: shown as a guest wherever they appear."""
        return self.user is None

    @property
    def key(self) -> str:
        """A stable id for limits: the user's id, or the guest's id (not their chosen name)."""
        return (
            f"user:{self.user.pk}"
            if self.user is not None
            else GUEST_KEY_PREFIX + str(self.guest_id)
        )


def new_guest_name() -> str:
    """A fresh display name for a visitor who is not signed in."""
    return f"guest-{secrets.token_hex(3)}"


def person_for(user: AbstractBaseUser | AnonymousUser | None, cookies: Mapping[str, str]) -> Person:
    """Name whoever sends with this user (maybe anonymous) and these cookies.

    Raises SignInRequired for anyone not signed in while CHAT_REQUIRE_LOGIN is on.
    """
    if user is not None and user.is_authenticated:
        return Person(user=user, name=user.get_username())
    if login_required_for_chat():
        raise SignInRequired
    guest = _guest_from_cookie(cookies.get(GUEST_COOKIE))
    if guest is None:
        name = new_guest_name()
        return Person(user=None, name=name, guest_id=name, new_guest=True)
    guest_id, name = guest
    return Person(user=None, name=name, guest_id=guest_id)


def person_for_scope(scope: Mapping[str, Any]) -> Person:
    """The person behind a WebSocket handshake (its user resolved by chat/auth.py)."""
    return person_for(scope.get("user"), scope.get("cookies") or {})


def validate_guest_name(name: str) -> str:
    """The name a guest asked for, normalised; ValidationError says why it can't be theirs."""
    # NFKC folds compatibility forms (fullwidth letters, ligatures) into the letters they
    # imitate, so the checks below see what a reader sees.
    name = " ".join(unicodedata.normalize("NFKC", name).split())
    if not name:
        raise ValidationError("Type a name.", code="blank")
    if not GUEST_NAME_MIN_LENGTH <= len(name) <= GUEST_NAME_MAX_LENGTH:
        raise ValidationError(f"A name is {GUEST_NAME_RULE}", code="length")
    if not all(_name_character(c) for c in name) or unicodedata.category(name[0])[0] == "M":
        raise ValidationError(f"A name is {GUEST_NAME_RULE}", code="characters")
    if not any(c.isalnum() for c in name):
        raise ValidationError("A name needs a letter or a digit.", code="characters")
    if looks_like_guest_or_staff(name):
        raise ValidationError("That name is reserved; pick another.", code="reserved")
    if mixes_look_alike_scripts(name):
        raise ValidationError(MIXED_SCRIPTS, code="confusable")
    user_model = get_user_model()
    if user_model._default_manager.filter(
        **{f"{user_model.USERNAME_FIELD}__iexact": name}
    ).exists():
        raise ValidationError(
            "That name belongs to a registered user; pick another.", code="registered"
        )
    return name


MIXED_SCRIPTS = (
    "A word of that name mixes letters of different scripts that look alike "
    "(a Cyrillic “а” among Latin letters, say); pick another."
)


def mixes_look_alike_scripts(name: str) -> bool:
    """True if a word of `name` mixes scripts with look-alike letters: "bоb" with a Cyrillic
    "о" would pass for "bob", "аdmin" for the reserved "admin". Word by word (Unicode's
    confusables, through confusable-homoglyphs, as django-registration checks usernames), so a
    name of a Cyrillic and a Latin word ("Ольга Smith") stays possible."""
    return any(confusables.is_dangerous(word) for word in _WORD_BREAKS.split(name) if word)


def looks_like_guest_or_staff(name: str) -> bool:
    """True for a name that imitates an automatic guest name or the site's staff."""
    if _GUEST_LOOKALIKE.match(name):
        return True
    skeleton = "".join(c for c in unicodedata.normalize("NFKC", name).casefold() if c.isalnum())
    return skeleton.startswith(RESERVED_NAME_PREFIXES)


def rename_guest(person: Person, name: str) -> Person:
    """The guest under a new name; their own automatic name is always theirs to go back to."""
    if person.guest_id is None:
        raise ValueError("only a guest can be renamed")
    if name.strip() != person.guest_id:
        name = validate_guest_name(name)
    return Person(user=None, name=name.strip(), guest_id=person.guest_id, new_guest=True)


def remember_guest(response: HttpResponse, request: HttpRequest, person: Person) -> None:
    """Give the browser the guest name it was just assigned, for its page and its sockets."""
    if person.new_guest and person.guest_id is not None:
        response.set_cookie(
            GUEST_COOKIE,
            _signer().sign_object({"i": person.guest_id, "n": person.name}),
            max_age=GUEST_COOKIE_MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=request.is_secure(),
        )


def _name_character(character: str) -> bool:
    # Letters and marks of any script (marks: the vowel signs many scripts write words with),
    # decimal digits, and a little punctuation.
    return (
        character in _NAME_PUNCTUATION
        or unicodedata.category(character)[0] in "LM"
        or (unicodedata.category(character) == "Nd")
    )


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=_GUEST_SALT)


def _guest_from_cookie(value: str | None) -> tuple[str, str] | None:
    """The (id, name) a cookie we signed holds; None for no cookie or a forged one."""
    if not value:
        return None
    try:
        payload = _signer().unsign(value, max_age=GUEST_COOKIE_MAX_AGE)
        if _AUTO_GUEST_NAME.fullmatch(payload):
            return payload, payload  # a cookie from before guests could rename themselves
        guest = _signer().unsign_object(value, max_age=GUEST_COOKIE_MAX_AGE)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(guest, dict):
        return None
    guest_id, name = guest.get("i"), guest.get("n")
    if not isinstance(guest_id, str) or not isinstance(name, str):
        return None
    return guest_id, name
