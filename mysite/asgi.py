"""ASGI entry point: HTTP goes to Django, WebSockets to the chat consumer."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
# Populate the app registry before importing code that touches models.
django_asgi_app = get_asgi_application()

from chat import autobahn_debug, lifecycle  # noqa: E402
from chat.entry import Entry  # noqa: E402
from chat.runtime import tune_gc_for_serving  # noqa: E402
from mysite.health import ProbeEndpoints  # noqa: E402
from mysite.logging import install_access_log  # noqa: E402

# /healthz, /readyz and /metrics before Django (mysite/health.py). A WebSocket handshake is
# checked (Origin), given its session and routed to its consumer in plain calls, so the
# consumer's coroutine is all an open socket holds (chat/entry.py).
application = Entry(ProbeEndpoints(django_asgi_app))

# Everything the process needs is loaded: keep collector pauses off the hot path.
tune_gc_for_serving()
# Under daphne: SIGTERM drains and closes sockets with 1012 (chat/lifecycle.py), and the access
# log goes through logging, without the probes (mysite/logging.py).
lifecycle.install_under_daphne()
install_access_log()
# Under daphne: autobahn formats its debug lines' values only if they are logged
# (chat/autobahn_debug.py).
autobahn_debug.install_under_daphne()
