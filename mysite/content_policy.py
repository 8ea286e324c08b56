"""Content-Security-Policy: django-csp's policy from settings, plus the page's own socket."""

from __future__ import annotations

from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponseBase


class ContentPolicyMiddleware(CSPMiddleware):
    """CSPMiddleware that also allows the WebSocket origin of the page itself in connect-src.

    CSP3 counts ws://HOST (wss:// under https) as 'self', but Chrome before 71 and Safari
    before 16 do not; naming the one origin the page connects to keeps them working without
    opening connect-src to every ws: or wss: host.
    """

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        """The configured policy parts, with this request's own ws(s):// origin added."""
        parts = super().get_policy_parts(request, response, report_only)
        try:
            host = request.get_host()
        except DisallowedHost:
            return parts  # answered with 400 anyway; 'self' is enough for an error page
        scheme = "wss" if request.is_secure() else "ws"
        update = dict(parts.update or {})
        sources = update.get("connect-src") or []
        update["connect-src"] = [
            *([sources] if isinstance(sources, str) else sources),
            f"{scheme}://{host}",
        ]
        parts.update = update
        return parts
