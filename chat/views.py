"""Pages: the room picker and a room."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from chat.accounts import chat_login_required
from chat.people import person_for, remember_guest
from chat.rooms import ROOM_NAME_MAX_LENGTH, ROOM_NAME_REGEX, ROOM_NAME_RULE


@chat_login_required
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


@chat_login_required
def room(request: HttpRequest, room_name: str) -> HttpResponse:
    """A chat room; a visitor who is not signed in is given a guest name (chat/people.py)."""
    person = person_for(request.user, request.COOKIES)
    response = render(
        request,
        "chat/room.html",
        {"room_name": room_name, "display_name": person.name, "person": person},
    )
    remember_guest(response, request, person)
    return response


def invalid_room(request: HttpRequest, bad_name: str) -> HttpResponse:
    """A friendly 404 for a path under /chat/ that is not a valid room."""
    return render(
        request,
        "chat/invalid_room.html",
        {"bad_name": bad_name.rstrip("/"), "room_rule": ROOM_NAME_RULE},
        status=404,
    )
