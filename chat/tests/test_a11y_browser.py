"""Accessibility: axe-core finds no violation on the index, a room and the sign-in page, in the
light and the dark colour scheme."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from axe_selenium_python import Axe
from django.utils import timezone
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from chat.testing.browser import chromium
from chat.testing.pages import Seed, SocketPerson, open_room, seed, wait_dataset
from chat.testing.server import DaphneServer

SCHEMES = ("light", "dark")


@pytest.fixture
def browser() -> Iterator[Chrome]:
    driver = chromium()
    yield driver
    driver.quit()


def prefer(driver: Chrome, scheme: str) -> None:
    """Have the page's `prefers-color-scheme` media query match `scheme`."""
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )


def violations(driver: Chrome) -> list[str]:
    """What axe-core finds wrong with the page as it is now, one line per element at fault."""
    axe = Axe(driver)
    axe.inject()
    results: dict[str, Any] = axe.run()
    return [
        f"{violation['id']}: {node['target']} {node.get('failureSummary', '')}"
        for violation in results["violations"]
        for node in violation["nodes"]
    ]


def test_the_pages_have_no_accessibility_violation_in_either_scheme(
    server: DaphneServer, browser: Chrome
) -> None:
    yesterday = timezone.now() - timedelta(days=1)
    seed(
        server,
        "lobby",
        [
            Seed("ada", "Morning! The notes are at https://example.com/notes", yesterday),
            Seed("guest-4f9a1c", "Thanks, reading them now", yesterday + timedelta(minutes=2)),
        ],
        users=[("ada", "a-long-test-password")],
    )
    found: dict[str, list[str]] = {}
    for scheme in SCHEMES:
        prefer(browser, scheme)
        assert browser.execute_script(
            f"return matchMedia('(prefers-color-scheme: {scheme})').matches"
        )
        browser.get(f"{server.http_url}/chat/")
        wait_dataset(browser, "rooms", lambda rooms: bool(rooms))
        found[f"index, {scheme}"] = violations(browser)

        open_room(browser, server, "lobby")
        other = SocketPerson(server, "lobby")
        browser.find_element(By.ID, "chat-message-input").send_keys("Hello all", Keys.ENTER)
        other.post("Welcome!")
        wait_dataset(browser, "lastSeq", lambda seq: int(seq or 0) >= 4)
        other.close()
        found[f"room, {scheme}"] = violations(browser)

        browser.get(f"{server.http_url}/accounts/login/?next=/chat/lobby/")
        found[f"sign-in, {scheme}"] = violations(browser)
    assert found == {page: [] for page in found}
