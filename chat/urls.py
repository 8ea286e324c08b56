"""HTTP routes of the chat app."""

from django.urls import path

import chat.rooms  # noqa: F401  (registers the <room:...> converter)
from chat import views

app_name = "chat"
urlpatterns = [
    path("", views.index, name="index"),
    path("<room:room_name>/", views.room, name="room"),
    # Anything else under /chat/ is a room name that breaks the rule: say so kindly.
    path("<path:bad_name>", views.invalid_room, name="invalid-room"),
]
