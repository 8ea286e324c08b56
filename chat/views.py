"""Pages: the room picker and a room."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat.rooms import ROOM_NAME_MAX_LENGTH, ROOM_NAME_REGEX, ROOM_NAME_RULE
from chat.services import GUEST_NAME_SESSION_KEY, guest_name


def index(request: HttpRequest) -> HttpResponse:
    """The room picker."""
    return render(
        request,
        "chat/index.html",
        {
            "room_rule": {
                "pattern": ROOM_NAME_REGEX,
                "max_length": ROOM_NAME_MAX_LENGTH,
                "text": ROOM_NAME_RULE,
            }
        },
    )


def room(request: HttpRequest, room_name: str) -> HttpResponse:
    """A chat room; a visitor who is not signed in is given a guest name for the session."""
    if request.user.is_authenticated:
        name = request.user.get_username()
    else:
        name = request.session.setdefault(GUEST_NAME_SESSION_KEY, guest_name())
    return render(request, "chat/room.html", {"room_name": room_name, "display_name": name})


def invalid_room(request: HttpRequest, bad_name: str) -> HttpResponse:
    """A friendly 404 for a path under /chat/ that is not a valid room."""
    return render(
        request,
        "chat/invalid_room.html",
        {"bad_name": bad_name.rstrip("/"), "room_rule": ROOM_NAME_RULE},
        status=404,
    )
