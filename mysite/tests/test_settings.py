"""Configuration from the environment: the parsers, and settings built in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mysite.env import env_bool, env_list, env_str

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


def settings_in_fresh_process(**env: str) -> dict[str, object]:
    """Import mysite.settings with exactly these variables, and report what it built."""
    code = (
        "import json, mysite.settings as s;"
        "print(json.dumps({'debug': s.DEBUG, 'hosts': s.ALLOWED_HOSTS,"
        " 'db': s.DATABASES['default'], 'layers': s.CHANNEL_LAYERS, 'key': s.SECRET_KEY},"
        " default=str))"
    )
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_", "REDIS_"))
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(result.stderr)
    return json.loads(result.stdout)


def test_embedded_defaults_need_nothing() -> None:
    built = settings_in_fresh_process()
    assert built["debug"] is True
    assert built["layers"] == {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 10_000},
        }
    }
    db = built["db"]
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
    assert built["debug"] is False
    assert built["key"] == "s3cret"
    assert built["hosts"] == ["chat.example.com", ".example.org"]
    db = built["db"]
    assert isinstance(db, dict)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], db["NAME"], db["TEST"]["NAME"]) == ("db.internal", "chat", "test_chat")
    assert built["layers"] == {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://cache.internal:6379/2"]},
        }
    }
