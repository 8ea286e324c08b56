"""Failed admin logins are throttled per client address and per username tried.

Only failures count (Django's `user_login_failed` signal), so whoever types the right password
is never slowed down. Past the limit (CHAT_LIMIT_ADMIN_LOGIN) a login attempt is answered 429
before any password is checked, so guessing stops paying. Counters live in
CHAT_LIMITS_STORAGE: Redis when REDIS_URL is set, so they hold across processes. Like the
chat's own limits (chat/throttle.py), a Redis that fails or stalls lets logins through, with a
warning, rather than locking every administrator out.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.utils.cache import add_never_cache_headers
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

logger = logging.getLogger("chat.admin_throttle")

NAMESPACE = "admin-login"
# A login waits at most this long on the counters' Redis before going ahead without them.
STORAGE_TIMEOUT_S = 1.0


@functools.lru_cache(maxsize=4)
def limiter(storage_url: str) -> MovingWindowRateLimiter:
    """One limiter per storage URL, so that a process's requests share one set of counters."""
    # limits spells a Redis unix socket redis+unix://; CHAT_LIMITS_STORAGE says unix://.
    if storage_url.startswith("unix://"):
        storage_url = "redis+" + storage_url
    storage = storage_from_string(
        storage_url,
        wrap_exceptions=True,
        socket_timeout=STORAGE_TIMEOUT_S,
        socket_connect_timeout=STORAGE_TIMEOUT_S,
    )
    # A moving window: a fixed one lets twice the limit through across a window's edge.
    return MovingWindowRateLimiter(storage)


def login_limits() -> list[RateLimitItem]:
    """CHAT_LIMIT_ADMIN_LOGIN: one or more rates ("5/minute;20/hour"), each enforced."""
    return parse_many(settings.CHAT_LIMIT_ADMIN_LOGIN)


def identities(request: HttpRequest, username: str | None) -> list[tuple[str, str]]:
    """What a failure counts against: the client's address and, if one was typed, the username."""
    keys = [("address", request.META.get("REMOTE_ADDR") or "unknown")]
    if username:
        # Hashed: a bounded key whatever was typed, and no usernames in Redis.
        digest = hashlib.sha256(username.casefold().encode())
        keys.append(("username", digest.hexdigest()))
    return keys


def retry_after(request: HttpRequest, username: str | None) -> int | None:
    """Seconds until this address or username may try again; None if it may try now."""
    if not settings.CHAT_LIMITS_ENABLED:
        return None
    counters = limiter(settings.CHAT_LIMITS_STORAGE)
    try:
        resets = [
            counters.get_window_stats(limit, NAMESPACE, *key).reset_time
            for limit in login_limits()
            for key in identities(request, username)
            if not counters.test(limit, NAMESPACE, *key)
        ]
    except StorageError as error:
        logger.warning("Admin login let through unthrottled: %s", error.storage_error)
        return None
    if not resets:
        return None
    return max(1, math.ceil(max(resets) - time.time()))


def record_failure(
    sender: object, credentials: dict[str, Any], request: HttpRequest | None = None, **_: Any
) -> None:
    """`user_login_failed` receiver: count a failed login against its address and username."""
    if request is None or not settings.CHAT_LIMITS_ENABLED:
        return
    counters = limiter(settings.CHAT_LIMITS_STORAGE)
    try:
        for limit in login_limits():
            for key in identities(request, credentials.get("username")):
                counters.hit(limit, NAMESPACE, *key)
    except StorageError as error:
        logger.warning("Failed admin login not counted: %s", error.storage_error)


def too_many_attempts(wait: int) -> HttpResponse:
    """The 429 for a login attempt over the limit."""
    response = HttpResponse(
        f"Too many failed logins. Try again in {wait} seconds.\n",
        status=429,
        content_type="text/plain; charset=utf-8",
    )
    response["Retry-After"] = str(wait)
    add_never_cache_headers(response)
    return response


class ThrottledAdminSite(admin.AdminSite):
    """The admin site, whose login refuses an address or username that failed too often."""

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Refuse a throttled login attempt with 429; hand any other to Django's login."""
        if request.method == "POST":
            wait = retry_after(request, request.POST.get("username"))
            if wait is not None:
                return too_many_attempts(wait)
        return super().login(request, extra_context)
