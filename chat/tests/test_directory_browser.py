"""The rooms directory in a browser: it follows the rooms while the page stays open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By

from chat.testing.browser import chromium
from chat.testing.pages import SocketPerson, dataset, wait_dataset
from chat.testing.server import DaphneServer


@pytest.fixture
def browser() -> Iterator[Chrome]:
    driver = chromium()
    yield driver
    driver.quit()


def test_the_directory_shows_new_rooms_and_who_is_in_them_while_open(
    server: DaphneServer, browser: Chrome
) -> None:
    browser.get(f"{server.http_url}/chat/")
    wait_dataset(browser, "roomsRendered", "1")
    assert dataset(browser, "rooms") == ""
    assert browser.find_element(By.ID, "rooms-empty").is_displayed()
    # Visiting a room creates nothing visible; its first message does.
    visitor = SocketPerson(server, "fresh")
    wait_dataset(browser, "roomsRendered", "2")
    assert dataset(browser, "rooms") == ""
    visitor.post("hello")
    wait_dataset(browser, "rooms", "fresh:1")
    link = browser.find_element(By.CSS_SELECTOR, "#rooms .room-link")
    assert (link.text, link.get_attribute("href")) == ("#fresh", f"{server.http_url}/chat/fresh/")
    assert not browser.find_element(By.ID, "rooms-empty").is_displayed()
    # The person leaves; the room stays listed, with nobody in it.
    visitor.close()
    wait_dataset(browser, "rooms", "fresh:0")
    # The picker still works from here.
    browser.find_element(By.ID, "room-name-input").send_keys("fresh\n")
    wait_dataset(browser, "synced", "true")
    assert browser.current_url.endswith("/chat/fresh/")
