"""HTTP routes of the chat app."""

from django.urls import path

import chat.rooms  # noqa: F401  (registers the <room:...> converter)
from chat import rooms_views, views

app_name = "chat"
urlpatterns = [
    path("", views.index, name="index"),
    # A person chat/access.py keeps out (a private room, a ban) gets a 403 page instead.
    path("<room:room_name>/", rooms_views.room_access_required(views.room), name="room"),
    # Two segments: no room name can shadow these (a room may be called "private").
    path("private/new/", rooms_views.private_new, name="private-new"),
    path("<room:room_name>/members/", rooms_views.private_members, name="private-members"),
    path(
        "<room:room_name>/members/remove/",
        rooms_views.private_member_remove,
        name="private-member-remove",
    ),
    # Anything else under /chat/ is a room name that breaks the rule: say so kindly.
    path("<path:bad_name>", views.invalid_room, name="invalid-room"),
]
