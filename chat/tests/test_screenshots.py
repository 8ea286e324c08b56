"""Screenshots of the index and a room, desktop (1280×800) and phone (390×844), light and dark,
into docs/screenshots/ (README.md shows them). A browser test: it runs in CI with the others."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from selenium.webdriver import Chrome

from chat.testing.browser import chromium
from chat.testing.pages import Seed, SocketPerson, open_room, seed, sign_in, wait_dataset
from chat.testing.server import ROOT, DaphneServer

pytestmark = [pytest.mark.browser, pytest.mark.redis]

SHOTS = ROOT / "docs" / "screenshots"
SIZES = {"desktop": (1280, 800, False), "phone": (390, 844, True)}
ROOM = "design-reviews-and-other-long-conversations"
PASSWORD = "a-long-test-password"


@pytest.fixture
def browser() -> Iterator[Chrome]:
    driver = chromium()
    yield driver
    driver.quit()


def emulate(driver: Chrome, size: str, scheme: str) -> None:
    width, height, mobile = SIZES[size]
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )


def shoot(driver: Chrome, name: str) -> Path:
    driver.execute_script("document.activeElement?.blur()")  # no caret or focus ring
    driver.execute_async_script("document.fonts.ready.then(arguments[0])")
    path = SHOTS / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    return path


def conversation() -> list[Seed]:
    yesterday = timezone.now().replace(hour=16, minute=2) - timedelta(days=1)
    today = timezone.now() - timedelta(minutes=30)
    return [
        Seed("grace", "Draft of the onboarding flow is up for review", yesterday, True),
        Seed("grace", "Mockups: https://example.com/onboarding-v3", yesterday, True),
        Seed("linus", "Looks good. The second step feels long on a phone", yesterday, True),
        Seed("ada", "Agreed — could the avatar picker move to settings?", today, True),
        Seed("grace", "Yes, I'll split it out.\nAnything else before Friday?", today, True),
        Seed("guest-4f9a1c", "Hi! Just visiting from the meetup", today, False),
        Seed("ada", "Welcome! Reviews happen here every Thursday.", today, True),
    ]


def test_screenshots_of_the_index_and_a_room(server: DaphneServer, browser: Chrome) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    users = [(name, PASSWORD) for name in ("ada", "grace", "linus")]
    seed(server, ROOM, conversation(), users=users)
    hour_ago = timezone.now() - timedelta(hours=1)
    seed(server, "lobby", [Seed("linus", "Anyone up for lunch?", hour_ago, True)])
    seed(server, "random", [Seed("grace", "Coffee?", hour_ago - timedelta(days=2), True)])
    sign_in(browser, server, "ada", PASSWORD)
    visitor = SocketPerson(server, ROOM)
    lurker = SocketPerson(server, "lobby")
    try:
        for size in SIZES:
            for scheme in ("light", "dark"):
                emulate(browser, size, scheme)
                browser.get(f"{server.http_url}/chat/")
                wait_dataset(browser, "rooms", lambda rooms: f"{ROOM}:1" in (rooms or ""))
                shoot(browser, f"index-{size}-{scheme}")
                open_room(browser, server, ROOM)
                wait_dataset(browser, "lastSeq", str(len(conversation())))
                visitor.typing()
                wait_dataset(browser, "typing", lambda typing: bool(typing))
                wait_dataset(browser, "people", lambda people: bool(people))
                shoot(browser, f"room-{size}-{scheme}")
    finally:
        visitor.close()
        lurker.close()
    assert len(list(SHOTS.glob("*.png"))) >= 8
