"""Configuration from the environment: the parsers, and settings built in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mysite.env import env_bool, env_list, env_str
from mysite.settings import trusted_origins

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("", False),
    ],
)
def test_env_bool(raw: str, value: bool) -> None:
    assert env_bool("X", default=not value, environ={"X": raw}) is value


def test_env_bool_default_and_garbage() -> None:
    assert env_bool("X", default=True, environ={}) is True
    with pytest.raises(ValueError, match="X='maybe'"):
        env_bool("X", default=True, environ={"X": "maybe"})


def test_env_list() -> None:
    assert env_list("X", ["d"], environ={}) == ["d"]
    assert env_list("X", ["d"], environ={"X": " a.example , b.example,, "}) == [
        "a.example",
        "b.example",
    ]
    assert env_list("X", ["d"], environ={"X": ""}) == []


def test_env_str() -> None:
    assert env_str("X", "d", environ={"X": "  "}) == "d"
    assert env_str("X", environ={"X": " v "}) == "v"


def run_in_fresh_process(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python ARGV` in the project with exactly these settings variables, none inherited."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_", "CHAT_"))
    }
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def settings_in_fresh_process(**env: str) -> dict[str, Any]:
    """Import mysite.settings with exactly these variables, and report every setting it built."""
    code = (
        "import json, mysite.settings as s;"
        "print(json.dumps({k: getattr(s, k) for k in dir(s) if k.isupper()}, default=str))"
    )
    result = run_in_fresh_process(["-c", code], **env)
    if result.returncode:
        raise RuntimeError(result.stderr)
    built: dict[str, Any] = json.loads(result.stdout)
    return built


def test_embedded_defaults_need_nothing() -> None:
    built = settings_in_fresh_process()
    assert built["DEBUG"] is True
    assert built["CHANNEL_LAYERS"] == {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 10_000},
        }
    }
    db = built["DATABASES"]["default"]
    assert isinstance(db, dict)
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"].endswith("db.sqlite3")
    assert db["TEST"]["NAME"].endswith("test_db.sqlite3")


def test_production_requires_a_secret_key() -> None:
    with pytest.raises(RuntimeError, match="DJANGO_SECRET_KEY"):
        settings_in_fresh_process(DJANGO_DEBUG="0")


def test_operator_settings_are_honoured() -> None:
    built = settings_in_fresh_process(
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="s3cret",
        DJANGO_ALLOWED_HOSTS="chat.example.com, .example.org",
        DATABASE_URL="postgres://u:p@db.internal:5432/chat",
        REDIS_URL="redis://cache.internal:6379/2",
    )
    assert built["DEBUG"] is False
    assert built["SECRET_KEY"] == "s3cret"
    assert built["ALLOWED_HOSTS"] == ["chat.example.com", ".example.org"]
    db = built["DATABASES"]["default"]
    assert isinstance(db, dict)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], db["NAME"], db["TEST"]["NAME"]) == ("db.internal", "chat", "test_chat")
    assert built["CHANNEL_LAYERS"] == {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://cache.internal:6379/2"]},
        }
    }


def test_trusted_origins_follow_the_allowed_hosts() -> None:
    hosts = ["chat.example.com", ".example.org", "[::1]", "*", ""]
    assert trusted_origins(hosts, https=True) == [
        "https://chat.example.com",
        "https://*.example.org",
        "https://[::1]",
    ]
    assert trusted_origins(hosts, https=False)[0] == "http://chat.example.com"


PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "s3cret",
    "DJANGO_ALLOWED_HOSTS": "chat.example.com,.example.org",
}


def test_https_turns_on_secure_transport() -> None:
    built = settings_in_fresh_process(**PRODUCTION, DJANGO_HTTPS="1")
    assert built["SECURE_SSL_REDIRECT"] is True
    assert built["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert built["SESSION_COOKIE_SECURE"] is True
    assert built["CSRF_COOKIE_SECURE"] is True
    assert built["SECURE_HSTS_SECONDS"] == 365 * 24 * 60 * 60
    # Subdomains and preload bind more than this site: only when the operator says so.
    assert built["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert built["SECURE_HSTS_PRELOAD"] is False
    assert built["CSRF_TRUSTED_ORIGINS"] == ["https://chat.example.com", "https://*.example.org"]


def test_plain_http_is_the_default() -> None:
    for built in (settings_in_fresh_process(), settings_in_fresh_process(**PRODUCTION)):
        assert built["SECURE_SSL_REDIRECT"] is False
        assert built["SECURE_PROXY_SSL_HEADER"] is None
        assert built["SESSION_COOKIE_SECURE"] is False
        assert built["CSRF_COOKIE_SECURE"] is False
        assert built["SECURE_HSTS_SECONDS"] == 0
    assert settings_in_fresh_process()["CSRF_TRUSTED_ORIGINS"] == [
        "http://localhost",
        "http://127.0.0.1",
        "http://[::1]",
    ]


def test_https_options_are_honoured() -> None:
    built = settings_in_fresh_process(
        **PRODUCTION,
        DJANGO_HTTPS="1",
        DJANGO_HSTS_SECONDS="600",
        DJANGO_HSTS_INCLUDE_SUBDOMAINS="1",
        DJANGO_HSTS_PRELOAD="yes",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://chat.example.com:8443, https://other.example",
        CHAT_LIMIT_ADMIN_LOGIN="3/hour",
    )
    assert built["SECURE_HSTS_SECONDS"] == 600
    assert built["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert built["SECURE_HSTS_PRELOAD"] is True
    assert built["CSRF_TRUSTED_ORIGINS"] == [
        "https://chat.example.com:8443",
        "https://other.example",
    ]
    assert built["CHAT_LIMIT_ADMIN_LOGIN"] == "3/hour"


@pytest.mark.parametrize(
    ("name", "value"),
    [("DJANGO_HSTS_SECONDS", "a year"), ("DJANGO_HSTS_SECONDS", "-1"), ("DJANGO_HTTPS", "maybe")],
)
def test_malformed_https_settings_are_refused(name: str, value: str) -> None:
    with pytest.raises(RuntimeError, match=name):
        settings_in_fresh_process(**{**PRODUCTION, "DJANGO_HTTPS": "1", name: value})


def test_malformed_admin_login_limit_is_refused() -> None:
    with pytest.raises(RuntimeError, match="lots"):
        settings_in_fresh_process(CHAT_LIMIT_ADMIN_LOGIN="lots")


def test_the_served_application_keeps_collector_pauses_off_the_hot_path() -> None:
    import gc

    from chat.runtime import GC_GEN0_THRESHOLD
    from mysite import asgi  # noqa: F401  (importing it is serving it)

    assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD
    assert gc.get_freeze_count() > 0
