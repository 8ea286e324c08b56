"""The tutorial's ASGI application (parts 2–3) on the project's settings and channel layer.

Run it with `daphne bench.tutorial_asgi:application`. The routing and middleware are the
tutorial's: `ws/chat/(?P<room_name>\\w+)/$` behind AllowedHostsOriginValidator and
AuthMiddlewareStack. Only the settings module is the project's, so the tutorial and the
project share one channel-layer configuration (REDIS_URL) and one ALLOWED_HOSTS.
"""

import os

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.core.asgi import get_asgi_application
from django.urls import re_path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
# Populate the app registry before importing code that may import models (as the tutorial does).
django_asgi_app = get_asgi_application()

from bench.tutorial_consumer import ChatConsumer  # noqa: E402

websocket_urlpatterns = [
    re_path(r"ws/chat/(?P<room_name>\w+)/$", ChatConsumer.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
