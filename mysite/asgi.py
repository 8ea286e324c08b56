"""ASGI entry point: HTTP goes to Django, WebSockets to the chat consumer."""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
# Populate the app registry before importing code that touches models.
django_asgi_app = get_asgi_application()

from chat import autobahn_debug, lifecycle  # noqa: E402
from chat.auth import auth_middleware_stack  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chat.runtime import tune_gc_for_serving  # noqa: E402
from chat.transport import ServerSendMiddleware  # noqa: E402
from mysite.health import ProbeEndpoints  # noqa: E402
from mysite.logging import install_access_log  # noqa: E402
from mysite.origin import SiteOriginValidator  # noqa: E402

application = ServerSendMiddleware(
    ProtocolTypeRouter(
        {
            # /healthz, /readyz and /metrics before Django (mysite/health.py).
            "http": ProbeEndpoints(django_asgi_app),
            # Only a page served by this site may open a socket (mysite/origin.py); the user
            # comes from the session, as with Channels' AuthMiddlewareStack (chat/auth.py).
            "websocket": SiteOriginValidator(
                auth_middleware_stack(URLRouter(websocket_urlpatterns))
            ),
        }
    )
)

# Everything the process needs is loaded: keep collector pauses off the hot path.
tune_gc_for_serving()
# Under daphne: SIGTERM drains and closes sockets with 1012 (chat/lifecycle.py), and the access
# log goes through logging, without the probes (mysite/logging.py).
lifecycle.install_under_daphne()
install_access_log()
# Under daphne: autobahn formats its debug lines' values only if they are logged
# (chat/autobahn_debug.py).
autobahn_debug.install_under_daphne()
