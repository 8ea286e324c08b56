"""Top-level URL routes."""

from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.urls import include, path
from django.views.generic import RedirectView

from chat import accounts, directory

urlpatterns = [
    path("", RedirectView.as_view(url="/chat/", permanent=False)),
    path("chat/", include("chat.urls")),
    path("admin/", admin.site.urls),
    # Account pages (chat/accounts.py). The guest rename lives here rather than under /chat/,
    # where "guest-name" would shadow the room of that name.
    path("accounts/signup/", accounts.SignupView.as_view(), name="signup"),
    path("accounts/login/", accounts.LoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("accounts/guest-name/", accounts.guest_name, name="guest-name"),
    # The rooms directory's JSON (chat/directory.py), polled by /chat/: not under /chat/, where
    # it would shadow a room.
    path("api/rooms/", directory.rooms_api, name="rooms-api"),
]
