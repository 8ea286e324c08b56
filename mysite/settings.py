"""Django settings. Everything an operator changes comes from the environment (see README)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from mysite.env import env_bool, env_list, env_str
from mysite.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

# Development by default, so a fresh clone runs with nothing set; production sets DJANGO_DEBUG=0.
DEBUG = env_bool("DJANGO_DEBUG", default=True)

_secret_key = env_str("DJANGO_SECRET_KEY")
if _secret_key is None:
    if not DEBUG:
        raise ImproperlyConfigured(
            "Set DJANGO_SECRET_KEY, or DJANGO_DEBUG=1 to use the development key."
        )
    _secret_key = "django-insecure-development-only-key-never-use-in-production"
SECRET_KEY = _secret_key

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else []
)


# --- HTTPS and security headers (docs/deployment.md#https-and-security-headers) ---------------
# DJANGO_HTTPS=1 says browsers reach the site over TLS (usually nginx in front of daphne). Off by
# default: a plain-HTTP run (runserver, the test servers) must not be redirected to https.
_https = env_bool("DJANGO_HTTPS", default=False)


def trusted_origins(hosts: list[str], *, https: bool) -> list[str]:
    """The site's origins, one per allowed host: what CSRF and the WebSocket check trust."""
    scheme = "https" if https else "http"
    # "*" names no origin (same-origin requests still pass); ".example.com" is every subdomain.
    return [
        f"{scheme}://*{host}" if host.startswith(".") else f"{scheme}://{host}"
        for host in hosts
        if host not in {"", "*"}
    ]


CSRF_TRUSTED_ORIGINS = env_list(
    "DJANGO_CSRF_TRUSTED_ORIGINS", default=trusted_origins(ALLOWED_HOSTS, https=_https)
)

_ONE_YEAR_S = 365 * 24 * 60 * 60
_hsts_seconds = env_str("DJANGO_HSTS_SECONDS") or str(_ONE_YEAR_S)
if not _hsts_seconds.isdigit():
    raise ImproperlyConfigured(f"DJANGO_HSTS_SECONDS={_hsts_seconds!r} is not a whole number")

SECURE_SSL_REDIRECT = _https
# nginx says which scheme the browser used (proxy_set_header X-Forwarded-Proto $scheme); only
# trusted when DJANGO_HTTPS=1, because only then is a proxy known to set it.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if _https else None
SESSION_COOKIE_SECURE = _https
CSRF_COOKIE_SECURE = _https
SECURE_HSTS_SECONDS = int(_hsts_seconds) if _https else 0
# Both bind every subdomain (preload: for good, via the browsers' lists): the operator's call.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", default=False)
# ...so `check --deploy` does not warn that we left them to the operator.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021"]

# Django's defaults, stated so the whole policy reads in one place.
SESSION_COOKIE_HTTPONLY = True  # no script ever needs the session cookie
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# django-csp 4 format. No page has inline script or style (tests: chat/tests/test_views.py,
# mysite/tests/test_security.py); the pages' JSON data blocks (json_script) are not executed,
# so script-src 'self' allows them.
CONTENT_SECURITY_POLICY: dict[str, Any] = {
    "DIRECTIVES": {
        "default-src": [SELF],
        # base.html's favicon is `data:,` (it spares a /favicon.ico request that would 404).
        "img-src": [SELF, "data:"],
        # mysite/content_policy.py adds the page's own ws:// or wss:// origin per request:
        # browsers before Chrome 71 and Safari 16 do not count it as 'self'.
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

INSTALLED_APPS = [
    # daphne first: its runserver replaces Django's so that it serves WebSockets too.
    "daphne",
    # django.contrib.admin, with its login throttled (mysite/admin_throttle.py).
    "mysite.apps.SiteAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "csp",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "mysite.content_policy.ContentPolicyMiddleware",
    # Serves /static/ under daphne without a separate web server (see docs/deployment.md).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "mysite.wsgi.application"
ASGI_APPLICATION = "mysite.asgi.application"


def _database() -> dict[str, Any]:
    """The default database: DATABASE_URL, or a SQLite file beside manage.py."""
    config: dict[str, Any] = dict(
        dj_database_url.config(
            env="DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}", conn_max_age=0
        )
    )
    # Tests get their own, explicitly named database: never the development one, and a file
    # (ChannelsLiveServerTestCase refuses in-memory SQLite, and its server is another process).
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # CHAT_TEST_DB_NAME lets two test runs share a checkout without sharing a database.
        test_name = env_str("CHAT_TEST_DB_NAME") or str(BASE_DIR / "test_db.sqlite3")
        config["TEST"] = {"NAME": test_name}
        config.setdefault("OPTIONS", {}).update(
            {
                # Writers queue for the lock (up to 20 s) instead of failing with "database is
                # locked"; IMMEDIATE takes it at BEGIN, so a read-then-write never deadlocks.
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                # WAL: readers (history, resume) do not wait for the writer, nor it for them.
                "init_command": "PRAGMA journal_mode=WAL;",
            }
        )
    else:
        config["TEST"] = {"NAME": f"test_{config['NAME']}"}
    return config


DATABASES = {"default": _database()}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def channel_layers_config(redis_url: str | list[str] | None) -> dict[str, Any]:
    """A Redis URL (or several, shards): channels-redis across processes; None: in-process.

    Redis pub/sub fits the fan-out (chat/fanout.py): each process subscribes once per room, and
    nothing is dropped at a queue's capacity. Messages published while a process is cut off
    from Redis are not replayed by Redis; the hub's reconcile fetches them from the database.
    With several URLs, channels-redis puts each group (a room) on one of them, by a hash of its
    name: a Redis that is down delays only its own rooms (docs/deployment.md, "Sharded Redis").
    """
    if not redis_url:
        return {
            "default": {
                "BACKEND": "channels.layers.InMemoryChannelLayer",
                "CONFIG": {"capacity": 10_000},
            }
        }
    return {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [redis_url] if isinstance(redis_url, str) else redis_url},
        }
    }


# REDIS_URL: one Redis, or several separated by commas, over which the channel layer shards the
# rooms. The chat's own stores (limits, presence) use the first alone: they hold little, and a
# Redis of theirs can be named (CHAT_LIMITS_STORAGE).
REDIS_URLS = env_list("REDIS_URL", default=[])
CHANNEL_LAYERS = channel_layers_config(REDIS_URLS)

# --- Rate limits and caps (chat/throttle.py; docs/security.md) -------------------------------
# `CHAT_LIMITS=off` lifts every limit and cap (the benchmarks run that way). Counters live in
# Redis when REDIS_URL is set, so they hold across processes; in the process otherwise.
CHAT_LIMITS_ENABLED = env_bool("CHAT_LIMITS", default=True)
# CHAT_LIMITS_STORAGE moves the counters to a Redis of their own (any redis://, rediss:// or
# unix:// URL), away from the channel layer's; "memory://" keeps them in each process.
CHAT_LIMITS_STORAGE = env_str("CHAT_LIMITS_STORAGE") or next(iter(REDIS_URLS), "memory://")


def _rate(name: str, default: str) -> str:
    """A rate in `limits` notation ("10/second;50/10seconds"), checked at startup."""
    from limits import parse_many

    value = env_str(name, default) or default
    try:
        parse_many(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate such as 10/second or 10/second;50/10seconds"
        ) from None
    return value


def _cap(name: str, default: int) -> int:
    """A positive whole number, checked at startup."""
    value = env_str(name, str(default)) or str(default)
    if not value.isdigit() or int(value) < 1:
        raise ImproperlyConfigured(f"{name}={value!r} is not a positive whole number")
    return int(value)


# Posts. Each rate is a burst and a sustained pace. A burst of 10 lets a page send at once the
# posts it queued while offline; 5 a second over 10 s is beyond anyone typing (a fast typist
# sends about one short message a second) and stops a script within its first second.
CHAT_LIMIT_POSTS_PER_PERSON = _rate("CHAT_LIMIT_POSTS_PER_PERSON", "10/second;50/10seconds")
# An address may be a whole office or campus behind one NAT, so twice a person's; it is what
# holds a script that takes a fresh guest name for every socket.
CHAT_LIMIT_POSTS_PER_ADDRESS = _rate("CHAT_LIMIT_POSTS_PER_ADDRESS", "20/second;100/10seconds")
# History pages (up to 100 messages, one database read each): a reader scrolling back asks for
# one a second or so.
CHAT_LIMIT_HISTORY_PER_PERSON = _rate("CHAT_LIMIT_HISTORY_PER_PERSON", "5/second;60/minute")
CHAT_LIMIT_HISTORY_PER_ADDRESS = _rate("CHAT_LIMIT_HISTORY_PER_ADDRESS", "20/second;240/minute")
# WebSocket handshakes (a room lookup and a session each). After a server restart every tab
# behind a NAT reconnects at once: 30 at once, then 5 a second.
CHAT_LIMIT_HANDSHAKES_PER_ADDRESS = _rate(
    "CHAT_LIMIT_HANDSHAKES_PER_ADDRESS", "30/second;300/minute"
)
# Rooms are rows kept for good: a person starts a few; a script enumerating names is stopped.
CHAT_LIMIT_NEW_ROOMS_PER_ADDRESS = _rate("CHAT_LIMIT_NEW_ROOMS_PER_ADDRESS", "10/minute;60/hour")
# Open sockets at once (caps, not rates). A person has a tab or two per room and a few rooms;
# an address may be a NAT. Each idle socket costs the server ~30 KB.
CHAT_MAX_SOCKETS_PER_ADDRESS = _cap("CHAT_MAX_SOCKETS_PER_ADDRESS", 50)
CHAT_MAX_SOCKETS_PER_PERSON = _cap("CHAT_MAX_SOCKETS_PER_PERSON", 20)

# --- Admin login throttle (mysite/admin_throttle.py) ------------------------------------------
# Failed logins to /admin/login/ allowed per client address and per username; past them every
# attempt is refused with 429 until the window moves on. Five a minute is more than anyone
# mistyping a password needs, and holds a guesser to 7,200 tries a day at one username, from
# however many addresses. CHAT_LIMITS=off lifts it.
CHAT_LIMIT_ADMIN_LOGIN = _rate("CHAT_LIMIT_ADMIN_LOGIN", "5/minute")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Outside the checkout in production (deploy/chat.env.example), so a deploy's collectstatic
# never leaves a stale manifest in a developer's clone.
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT") or BASE_DIR / "staticfiles")
# Hashed, compressed names once collectstatic has run; plain ones before (mysite/static.py).
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "mysite.static.HashedStaticFiles"},
}
# Serve straight from the apps too, so `daphne mysite.asgi:application` works from a clone;
# `collectstatic` is still the faster path in production.
WHITENOISE_USE_FINDERS = True
# Before the first collectstatic, STATIC_ROOT does not exist yet and the finders suffice.
warnings.filterwarnings("ignore", message="No directory at")

# `python manage.py test` runs the same pytest suite as `make test`.
TEST_RUNNER = "mysite.test_runner.PytestTestRunner"

# CHAT_LOG_FORMAT=json: one JSON object per line, for the chat, Django and daphne's access log
# alike (mysite/logging.py); `text` (the default): one readable line.
LOGGING = logging_config(
    fmt=env_str("CHAT_LOG_FORMAT") or "text", level=env_str("CHAT_LOG_LEVEL") or "INFO"
)
LOGGING_CONFIG = "mysite.logging.configure"  # Python's warnings go through it too

# --- Operations (mysite/health.py; docs/deployment.md) --------------------------------------
# /metrics asks for `Authorization: Bearer <this>` when set; unset, it answers loopback only.
CHAT_METRICS_TOKEN = env_str("CHAT_METRICS_TOKEN") or ""

# --- Presence (chat/presence.py) --------------------------------------------------------------
# Who is in each room: in Redis when REDIS_URL is set, so every process sees everyone; in the
# process otherwise. A socket whose process stops re-asserting it (killed, say) is gone from its
# rooms within CHAT_PRESENCE_LIFETIME seconds; the process re-asserts its sockets three times
# a lifetime.
CHAT_PRESENCE_STORAGE = next(iter(REDIS_URLS), "memory://")
CHAT_PRESENCE_LIFETIME = _cap("CHAT_PRESENCE_LIFETIME", 60)

# --- Accounts (chat/accounts.py, chat/people.py; README "Accounts") ---------------------------
# Off: visitors who are not signed in chat as guests, named in a signed cookie. On: the chat
# pages send them to sign in first, and their sockets are refused.
CHAT_REQUIRE_LOGIN = env_bool("CHAT_REQUIRE_LOGIN", default=False)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "chat:index"
LOGOUT_REDIRECT_URL = "chat:index"
# Sign-up attempts per client address: each stores a user and hashes a password (~0.1 s of
# CPU). Ten an hour is more than a household or an office signs up; a script is stopped.
# Sign-ins share CHAT_LIMIT_ADMIN_LOGIN's counters. CHAT_LIMITS=off lifts both.
CHAT_LIMIT_SIGNUPS_PER_ADDRESS = _rate("CHAT_LIMIT_SIGNUPS_PER_ADDRESS", "10/hour")
# Guest renames, per guest and per address: a name is shown to everyone in the room.
CHAT_LIMIT_GUEST_RENAMES = _rate("CHAT_LIMIT_GUEST_RENAMES", "5/minute;30/hour")
