"""Helpers for browser tests of the pages against a real daphne (chat/testing/server.py).

Rooms are filled straight into the server's database (quicker than posting, and with chosen
authors and times); people who post live use a socket of their own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from chat.testing.server import ROOT, DaphneServer

WAIT = 15

# Run in a child process with the server's environment: its database, its settings.
_SEED = """
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.db import transaction
from chat.models import Message, Room

job = json.load(sys.stdin)
User = get_user_model()
with transaction.atomic():
    for name, password in job["users"]:
        user = User.objects.create_user(name)
        user.set_password(password)
        user.save()
    if job["room"]:
        room, _ = Room.objects.get_or_create(name=job["room"])
        for author, text, when, signed_in in job["messages"]:
            room.last_seq += 1
            Message.objects.create(
                room=room,
                seq=room.last_seq,
                author=User.objects.get(username=author) if signed_in else None,
                author_name=author,
                body=text,
                created_at=when,
            )
        room.save()
"""


class Seed(NamedTuple):
    """A message to store: who (a username if `signed_in`, else a guest's name), what, when."""

    author: str
    text: str
    when: datetime
    signed_in: bool = False


def seed(
    server: DaphneServer,
    room: str | None = None,
    messages: list[Seed] | None = None,
    users: list[tuple[str, str]] | None = None,
) -> None:
    """Create accounts (username, password) and store messages in a room, in one transaction."""
    job = {
        "users": users or [],
        "room": room,
        "messages": [(m.author, m.text, m.when.isoformat(), m.signed_in) for m in messages or []],
    }
    subprocess.run(
        [sys.executable, "-c", _SEED],
        input=json.dumps(job).encode(),
        cwd=ROOT,
        env=server.env,
        check=True,
    )


def dataset(driver: WebDriver, key: str) -> str | None:
    """A value the page keeps in `document.body.dataset` for tests."""
    value = driver.execute_script(f"return document.body.dataset.{key} ?? null")
    return None if value is None else str(value)


def wait_dataset(driver: WebDriver, key: str, wanted: str | Callable[[str | None], bool]) -> None:
    """Wait until `document.body.dataset[key]` is `wanted` (or satisfies it)."""
    test = wanted if callable(wanted) else lambda value: value == wanted
    WebDriverWait(driver, WAIT).until(
        lambda d: test(dataset(d, key)),
        f"dataset.{key} never became {wanted!r} (is {dataset(driver, key)!r})",
    )


def open_room(driver: WebDriver, server: DaphneServer, room: str) -> None:
    """Open a room's page and wait until its history is in."""
    driver.get(f"{server.http_url}/chat/{room}/")
    wait_dataset(driver, "synced", "true")


def sign_in(driver: WebDriver, server: DaphneServer, username: str, password: str) -> None:
    """Sign in through the sign-in page."""
    driver.get(f"{server.http_url}/accounts/login/?next=/chat/")
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(password)
    driver.find_element(By.ID, "sign-in-submit").click()
    WebDriverWait(driver, WAIT).until(lambda d: d.current_url.endswith("/chat/"))


class SocketPerson:
    """Someone in a room through a socket of their own (a guest, or whoever `cookie` says)."""

    def __init__(self, server: DaphneServer, room: str, cookie: str | None = None) -> None:
        headers = {"Cookie": cookie} if cookie else None
        # Entered by hand: the connection outlives this call (close() leaves it).
        self.socket: ClientConnection = connect(
            f"{server.ws_url}/ws/chat/{room}/?sync=1",
            origin=Origin(server.http_url),
            additional_headers=headers,
            open_timeout=WAIT,
        ).__enter__()
        self.receive_until(lambda frame: frame["type"] == "synced")

    def receive_until(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Read frames until one satisfies `done`; return it."""
        while True:
            frame = json.loads(self.socket.recv(timeout=WAIT))
            if done(frame):
                return dict(frame)

    def send(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame with a fresh client id; return its ack, or the error refusing it."""
        client_id = uuid.uuid4().hex
        self.socket.send(json.dumps({**frame, "client_id": client_id}))
        return self.receive_until(
            lambda reply: reply["type"] in {"ack", "error"} and reply.get("client_id") == client_id
        )

    def post(self, text: str) -> int:
        """Post and wait until it is stored; its seq."""
        reply = self.send({"type": "message", "message": text})
        assert reply["type"] == "ack", reply
        return int(reply["seq"])

    def typing(self) -> None:
        """Say this person is typing (no answer comes)."""
        self.socket.send(json.dumps({"type": "typing"}))

    def close(self) -> None:
        self.socket.close()


def cookie_header(driver: WebDriver) -> str:
    """The browser's cookies for the site, as a Cookie header (to act as the same person)."""
    return "; ".join(f"{c['name']}={c['value']}" for c in driver.get_cookies())
