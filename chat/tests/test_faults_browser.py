"""Two browsers stay open while the server is killed and restarted: nothing lost or doubled."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

from chat.testing.browser import chromium
from chat.testing.server import DaphneServer

pytestmark = [pytest.mark.timeout(180)]

WAIT = 30


@pytest.fixture
def browsers() -> Iterator[list[Chrome]]:
    drivers = [chromium(), chromium()]
    yield drivers
    for driver in drivers:
        driver.quit()


def state(driver: Chrome, key: str) -> str | None:
    return driver.execute_script(f"return document.body.dataset.{key}")


def wait_state(driver: Chrome, key: str, value: str) -> None:
    WebDriverWait(driver, WAIT).until(
        lambda d: state(d, key) == value,
        f"{key} never became {value!r} (is {state(driver, key)!r})",
    )


def post(driver: Chrome, text: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "#chat-message-input").send_keys(text + Keys.ENTER)


def shown(driver: Chrome) -> list[tuple[int, str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#chat-log .msg[data-seq]")
    return [
        (int(row.get_attribute("data-seq") or 0), row.find_element(By.CSS_SELECTOR, ".text").text)
        for row in rows
    ]


def test_pages_reconnect_by_themselves_and_show_every_message_once(
    server: DaphneServer, browsers: list[Chrome]
) -> None:
    alice, bob = browsers
    for driver in browsers:
        driver.get(f"{server.http_url}/chat/restart/")
        wait_state(driver, "wsState", "open")

    for n in range(3):
        post(alice, f"before {n}")
    for driver in browsers:
        wait_state(driver, "lastSeq", "3")

    server.kill()
    for driver in browsers:
        wait_state(driver, "wsState", "reconnecting")
    assert bob.find_element(By.CSS_SELECTOR, "#connection-status").text == "Reconnecting…"
    # Typed while the server is down: kept, shown as pending, sent after the reconnect.
    post(bob, "while down 1")
    post(bob, "while down 2")
    wait_state(bob, "pending", "2")

    server.start()
    for driver in browsers:
        wait_state(driver, "wsState", "open")
        wait_state(driver, "pending", "0")
    post(alice, "after")
    for driver in browsers:
        wait_state(driver, "lastSeq", "6")

    stored = server.stored("restart")
    assert len(stored) == 6
    assert sorted(text for _, text in stored[3:5]) == ["while down 1", "while down 2"]
    assert stored[5] == (6, "after")
    for driver in browsers:
        assert shown(driver) == stored

    # A reload shows the history.
    alice.refresh()
    wait_state(alice, "lastSeq", "6")
    assert shown(alice) == server.stored("restart")


def test_a_restart_closes_with_1012_and_the_page_comes_back_at_once(
    server: DaphneServer, browsers: list[Chrome]
) -> None:
    """SIGTERM (a deploy) closes every socket with 1012; the page reconnects with no backoff
    to the process that replaces it, sends what was typed meanwhile, and misses nothing."""
    alice, bob = browsers
    for driver in browsers:
        driver.get(f"{server.http_url}/chat/deploy/")
        wait_state(driver, "wsState", "open")
    post(alice, "before")
    for driver in browsers:
        wait_state(driver, "lastSeq", "1")

    server.stop()  # SIGTERM: the graceful path
    for driver in browsers:
        # The close said 1012, and the page tried again at once (delay 0). That try may fail
        # (no server yet); later ones back off as usual until the new process listens.
        WebDriverWait(driver, WAIT).until(
            lambda d: (state(d, "closes") or "").startswith("1012:0"),
            f"closes: {state(driver, 'closes')!r}",
        )
    post(bob, "while restarting")
    server.start()
    for driver in browsers:
        wait_state(driver, "wsState", "open")
        wait_state(driver, "pending", "0")
        wait_state(driver, "lastSeq", "2")
    assert server.stored("deploy") == [(1, "before"), (2, "while restarting")]
    for driver in browsers:
        assert shown(driver) == server.stored("deploy")
