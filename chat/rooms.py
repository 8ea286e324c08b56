"""The one rule for room names, shared by HTTP routes, websocket routes and group names."""

from __future__ import annotations

import re

from django.urls import register_converter

ROOM_NAME_MAX_LENGTH = 64
# Channels group names allow [a-zA-Z0-9-_.] and fewer than 100 characters; this is a subset.
ROOM_NAME_REGEX = rf"[A-Za-z0-9._-]{{1,{ROOM_NAME_MAX_LENGTH}}}"
ROOM_NAME_RULE = (
    f"Room names are 1–{ROOM_NAME_MAX_LENGTH} characters: ASCII letters, digits, "
    "“-”, “_” and “.” (but not just “.” or “..”)."
)
_ROOM_NAME = re.compile(ROOM_NAME_REGEX)
# Browsers rewrite the path segments "." and ".." before requesting, so no URL reaches them.
_UNREACHABLE = frozenset({".", ".."})


def is_valid_room_name(name: str) -> bool:
    """True if `name` follows the room-name rule."""
    return _ROOM_NAME.fullmatch(name) is not None and name not in _UNREACHABLE


def group_name(room_name: str) -> str:
    """The channel-layer group that carries a room's messages."""
    return f"chat_{room_name}"


class RoomNameConverter:
    """Path converter (`<room:room_name>`) that only matches valid room names."""

    regex = ROOM_NAME_REGEX

    def to_python(self, value: str) -> str:
        """Refuse the names the regex alone lets through."""
        if not is_valid_room_name(value):
            raise ValueError(value)
        return value

    def to_url(self, value: str) -> str:
        """Room names are already URL-safe."""
        return value


register_converter(RoomNameConverter, "room")
