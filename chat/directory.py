"""The rooms directory: public rooms with a message, who is in them, when they last spoke.

`/chat/` shows it and `/api/rooms/` serves it as JSON, which the page polls to keep it current.
The API lives outside `/chat/`, where any path segment is a room name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypedDict

from asgiref.sync import async_to_sync
from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, JsonResponse

from chat.access import visible_rooms
from chat.models import Message
from chat.people import login_required_for_chat
from chat.presence import presences
from chat.protocol import format_time

if TYPE_CHECKING:
    from chat.access import AnyUser

# Rooms listed at most, the most recently active first: a directory, not an export.
DIRECTORY_SIZE: Final = 50
# How often the page asks again, in milliseconds (the page reads it from the listing).
POLL_EVERY_MS: Final = 5000


class RoomEntry(TypedDict):
    """One room of the directory as the page gets it."""

    name: str
    # People in it now, one per person however many tabs they have open.
    online: int
    # When its latest event (a post, an edit, a delete) was stored, ISO 8601 UTC; never null:
    # a room is listed once it has a message.
    last_message: str
    private: bool


class Listing(TypedDict):
    """The directory: its rooms, and how often to ask again."""

    rooms: list[RoomEntry]
    poll_ms: int


def rooms_listing(user: AnyUser) -> Listing:
    """The rooms `user` may see that have a message, most recently active first."""
    latest = Message.objects.filter(room_id=OuterRef("pk")).order_by("-seq").values("created_at")
    rows = list(
        visible_rooms(user)
        .filter(last_seq__gt=0)
        .annotate(last_message=Subquery(latest[:1]))
        .filter(last_message__isnull=False)
        .order_by("-last_message", "name")
        .values_list("name", "last_message", "private")[:DIRECTORY_SIZE]
    )
    online = _people_of_rooms([name for name, _, _ in rows])
    return {
        "rooms": [
            {
                "name": name,
                "online": len(online.get(name, [])),
                "last_message": format_time(last_message),
                "private": private,
            }
            for name, last_message, private in rows
        ],
        "poll_ms": POLL_EVERY_MS,
    }


def rooms_api(request: HttpRequest) -> JsonResponse:
    """GET /api/rooms/: the directory as JSON, for the index page to poll."""
    if login_required_for_chat() and not request.user.is_authenticated:
        return JsonResponse({"detail": "Sign in to see the rooms."}, status=401)
    response = JsonResponse(rooms_listing(request.user))
    response["Cache-Control"] = "no-store"
    return response


def _people_of_rooms(names: list[str]) -> dict[str, list[str]]:
    """Who is in each room, from this process's presence store (memory or Redis)."""
    if not names:
        return {}

    async def read() -> dict[str, list[str]]:
        return await presences.get().people_of_rooms(names)

    # Under daphne a sync view runs in a thread, and this runs on the server's own event loop:
    # the presence store its sockets use.
    return async_to_sync(read)()
