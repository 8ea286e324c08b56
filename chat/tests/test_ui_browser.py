"""The room page as people use it: own messages, groups, the new-messages marker, "load older",
Shift+Enter and links, posts typed offline. Each test has a daphne of its own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from chat.testing.browser import chromium
from chat.testing.pages import (
    WAIT,
    Seed,
    SocketPerson,
    cookie_header,
    dataset,
    open_room,
    seed,
    wait_dataset,
)
from chat.testing.server import DaphneServer


@pytest.fixture
def browser() -> Iterator[Chrome]:
    driver = chromium()
    yield driver
    driver.quit()


def type_into(driver: Chrome, *keys: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "#chat-message-input").send_keys(*keys)


def row(driver: Chrome, seq: int) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'#chat-log .msg[data-seq="{seq}"]')


def place_in_log(driver: Chrome, seq: int) -> float:
    """Where a message is in the log's viewport, in pixels from its top."""
    return float(
        driver.execute_script(
            "const log = document.querySelector('#chat-log');"
            "const row = log.querySelector(`.msg[data-seq='${arguments[0]}']`);"
            "return row.getBoundingClientRect().top - log.getBoundingClientRect().top",
            seq,
        )
    )


def classes(element: WebElement) -> set[str]:
    return set((element.get_attribute("class") or "").split())


def test_own_messages_are_marked_and_an_authors_run_is_grouped(
    server: DaphneServer, browser: Chrome
) -> None:
    open_room(browser, server, "groups")
    other = SocketPerson(server, "groups")
    type_into(browser, "one", Keys.ENTER)
    type_into(browser, "two", Keys.ENTER)
    wait_dataset(browser, "lastSeq", "2")
    other.post("three")
    wait_dataset(browser, "lastSeq", "3")
    type_into(browser, "four", Keys.ENTER)
    wait_dataset(browser, "lastSeq", "4")
    rows = [classes(row(browser, seq)) for seq in range(1, 5)]
    assert ["own" in r for r in rows] == [True, True, False, True]
    # A run of one author's messages shows the name once, on its first message.
    assert ["cont" in r for r in rows] == [False, True, False, False]
    names = browser.find_elements(By.CSS_SELECTOR, "#chat-log .msg .author")
    assert [name.is_displayed() for name in names] == [True, False, True, True]
    # The name is still there for screen readers, and in the log's text.
    assert row(browser, 2).find_element(By.CSS_SELECTOR, ".author").get_attribute("textContent")
    # One day separator heads the day.
    assert [day.text for day in browser.find_elements(By.CSS_SELECTOR, "#chat-log .day")] == [
        "Today"
    ]
    other.close()


def test_a_reader_scrolled_up_gets_a_marker_a_jump_button_and_a_count_in_the_title(
    server: DaphneServer, browser: Chrome
) -> None:
    now = timezone.now()
    history = [Seed("ada", f"old {n}", now - timedelta(minutes=60 - n)) for n in range(40)]
    seed(server, "news", history)
    open_room(browser, server, "news")
    title = browser.title
    jump = browser.find_element(By.ID, "jump-latest")
    assert not jump.is_displayed()
    browser.execute_script("document.querySelector('#chat-log').scrollTop = 0")
    WebDriverWait(browser, WAIT).until(lambda _: jump.is_displayed())
    other = SocketPerson(server, "news")
    other.post("news 1")
    other.post("news 2")
    wait_dataset(browser, "unread", "2")
    assert browser.title == f"(2) {title}"
    assert "2 new" in jump.text
    marker = browser.find_element(By.CSS_SELECTOR, "#chat-log .new-marker")
    following = marker.find_element(By.XPATH, "following-sibling::*[contains(@class, 'msg')][1]")
    assert following.get_attribute("data-seq") == "41"
    # The reader was not moved.
    assert browser.execute_script("return document.querySelector('#chat-log').scrollTop") == 0
    jump.click()
    wait_dataset(browser, "unread", "0")
    assert browser.title == title
    WebDriverWait(browser, WAIT).until(lambda _: not jump.is_displayed())
    # Messages that come while the reader is at the bottom are not unread.
    other.post("news 3")
    wait_dataset(browser, "lastSeq", "43")
    assert dataset(browser, "unread") == "0"
    other.close()


def test_load_older_keeps_the_readers_place(server: DaphneServer, browser: Chrome) -> None:
    now = timezone.now()
    seed(
        server,
        "archive",
        [Seed("ada", f"message {n}", now - timedelta(minutes=200 - n)) for n in range(1, 121)],
    )
    open_room(browser, server, "archive")
    # The latest 50 are shown: 71…120.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chat-log .msg[data-seq]")) == 50
    browser.execute_script("document.querySelector('#chat-log').scrollTop = 0")
    before = place_in_log(browser, 71)
    browser.find_element(By.ID, "load-older").click()
    WebDriverWait(browser, WAIT).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#chat-log .msg[data-seq]")) == 100
    )
    # Message 71 has not moved: the older ones arrived above it, out of view.
    assert abs(place_in_log(browser, 71) - before) <= 1
    assert browser.execute_script("return document.querySelector('#chat-log').scrollTop") > 0


def test_shift_enter_makes_a_new_line_and_only_http_links_are_links(
    server: DaphneServer, browser: Chrome
) -> None:
    open_room(browser, server, "typing")
    type_into(browser, "first line", Keys.SHIFT, Keys.ENTER, Keys.SHIFT, "second line", Keys.ENTER)
    wait_dataset(browser, "lastSeq", "1")
    assert server.stored("typing") == [(1, "first line\nsecond line")]
    type_into(
        browser,
        "see https://example.com/a_(b). or javascript:alert(1) or ftp://example.com/x",
        Keys.ENTER,
    )
    wait_dataset(browser, "lastSeq", "2")
    links = row(browser, 2).find_elements(By.CSS_SELECTOR, "a")
    assert [link.get_attribute("href") for link in links] == ["https://example.com/a_(b)"]
    assert links[0].get_attribute("rel") == "noopener noreferrer nofollow"
    assert links[0].get_attribute("target") == "_blank"
    text = row(browser, 2).find_element(By.CSS_SELECTOR, ".text").text
    assert text == "see https://example.com/a_(b). or javascript:alert(1) or ftp://example.com/x"


def test_posts_typed_offline_survive_closing_the_tab(server: DaphneServer, browser: Chrome) -> None:
    open_room(browser, server, "offline")
    server.kill()
    wait_dataset(browser, "wsState", "reconnecting")
    type_into(browser, "typed offline 1", Keys.ENTER)
    type_into(browser, "typed offline 2", Keys.ENTER)
    wait_dataset(browser, "pending", "2")
    stored = browser.execute_script("return localStorage.getItem('chat.pending.offline')")
    assert [text for _, text in json.loads(stored)] == ["typed offline 1", "typed offline 2"]
    # Pending posts are not announced: the log announces each post once, when it is stored.
    pending = browser.find_elements(By.CSS_SELECTOR, "#chat-log .msg.pending")
    assert [p.get_attribute("aria-hidden") for p in pending] == ["true", "true"]
    browser.get("about:blank")  # the tab leaves the room with its posts unsent
    server.start()
    open_room(browser, server, "offline")
    wait_dataset(browser, "lastSeq", "2")
    wait_dataset(browser, "pending", "0")
    assert server.stored("offline") == [(1, "typed offline 1"), (2, "typed offline 2")]
    assert browser.execute_script("return localStorage.getItem('chat.pending.offline')") is None


def test_edits_and_deletes_reach_a_page_that_was_away_when_they_happened(
    server: DaphneServer, browser: Chrome
) -> None:
    open_room(browser, server, "changes")
    type_into(browser, "first draft", Keys.ENTER)
    type_into(browser, "regret this", Keys.ENTER)
    type_into(browser, "short-lived", Keys.ENTER)
    wait_dataset(browser, "lastSeq", "3")
    other = SocketPerson(server, "changes")
    other.post("not yours to change")
    wait_dataset(browser, "lastSeq", "4")
    # Only one's own messages have the controls (this person is no moderator).
    assert row(browser, 4).find_elements(By.CSS_SELECTOR, ".actions button") == []

    # Edit with the keyboard: the Edit button, type, Enter.
    edit = row(browser, 1).find_element(By.CSS_SELECTOR, "button.edit")
    edit.send_keys(Keys.ENTER)
    field = browser.switch_to.active_element
    assert field.get_attribute("class") == "edit-input"
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("second draft", Keys.ENTER)
    wait_dataset(browser, "lastSeq", "5")
    assert row(browser, 1).find_element(By.CSS_SELECTOR, ".text").text == "second draft"
    assert row(browser, 1).find_element(By.CSS_SELECTOR, ".edited").text == "(edited)"
    # Delete asks first.
    row(browser, 3).find_element(By.CSS_SELECTOR, "button.delete").click()
    browser.switch_to.alert.accept()
    wait_dataset(browser, "lastSeq", "6")
    assert row(browser, 3).find_element(By.CSS_SELECTOR, ".text").text == "message deleted"

    # The page goes away (into the back-forward cache, say) and its socket with it…
    browser.execute_script("window.dispatchEvent(new Event('pagehide'))")
    # …while the same person, in another tab, edits one message and deletes another.
    same_person = SocketPerson(server, "changes", cookie_header(browser))
    assert same_person.send({"type": "edit", "seq": 1, "message": "final text"})["type"] == "ack"
    assert same_person.send({"type": "delete", "seq": 2})["type"] == "ack"
    refused = other.send({"type": "edit", "seq": 1, "message": "hijacked"})
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    # Back: it resumes after the last seq it held and learns of both changes.
    browser.execute_script(
        "window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))"
    )
    wait_dataset(browser, "lastSeq", "8")
    assert row(browser, 1).find_element(By.CSS_SELECTOR, ".text").text == "final text"
    assert "deleted" in classes(row(browser, 2))
    assert row(browser, 2).find_element(By.CSS_SELECTOR, ".text").text == "message deleted"
    assert row(browser, 2).find_elements(By.CSS_SELECTOR, ".actions") == []
    log = str(browser.find_element(By.CSS_SELECTOR, "#chat-log").get_property("value"))
    assert "regret this" not in log
    assert "short-lived" not in log
    # A fresh page shows the same: history carries the current state, never deleted text.
    browser.refresh()
    wait_dataset(browser, "synced", "true")
    assert row(browser, 1).find_element(By.CSS_SELECTOR, ".text").text == "final text"
    assert row(browser, 1).find_element(By.CSS_SELECTOR, ".edited").text == "(edited)"
    texts = [row(browser, seq).find_element(By.CSS_SELECTOR, ".text").text for seq in (2, 3)]
    assert texts == ["message deleted", "message deleted"]
    other.close()
    same_person.close()
