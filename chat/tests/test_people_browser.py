"""Two people in one room, each in a browser of their own: they see each other type."""

from channels.testing import ChannelsLiveServerTestCase
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from chat.testing.browser import LiveChatBrowsersMixin

WAIT = 10


class TwoPeople(LiveChatBrowsersMixin, ChannelsLiveServerTestCase):
    """Alice and Bob, each in a browser; one test per class, each on a fresh test server."""

    serve_static = True

    browsers = ("alice", "bob")

    def open_room(self, driver: WebDriver, room: str) -> str:
        """Open a room and wait until its socket is live; return the name the page shows."""
        driver.get(f"{self.live_server_url}/chat/{room}/")
        WebDriverWait(driver, WAIT).until(
            lambda d: d.execute_script("return document.body.dataset.synced") == "true"
        )
        return str(driver.find_element(By.CSS_SELECTOR, ".me").text)


class TypingTests(TwoPeople):
    def test_typing_shows_to_the_other_and_expires_by_itself(self) -> None:
        alice_name = self.open_room(self.alice, "typing")
        self.open_room(self.bob, "typing")
        self.alice.find_element(By.CSS_SELECTOR, "#chat-message-input").send_keys("hel")
        typing = self.bob.find_element(By.CSS_SELECTOR, "#typing")
        WebDriverWait(self.bob, WAIT).until(lambda _: typing.text == f"{alice_name} is typing…")
        # Alice's own page never says she is typing.
        self.assertEqual(self.alice.find_element(By.CSS_SELECTOR, "#typing").text, "")
        # With no further keystroke it goes away on its own.
        WebDriverWait(self.bob, WAIT).until(lambda _: typing.text == "")


class PostingTests(TwoPeople):
    def test_posting_ends_the_typing_notice_at_once(self) -> None:
        self.open_room(self.alice, "posting")
        self.open_room(self.bob, "posting")
        box = self.alice.find_element(By.CSS_SELECTOR, "#chat-message-input")
        box.send_keys("hello")
        typing = self.bob.find_element(By.CSS_SELECTOR, "#typing")
        WebDriverWait(self.bob, WAIT).until(lambda _: typing.text.endswith("is typing…"))
        box.send_keys(Keys.ENTER)
        log = self.bob.find_element(By.CSS_SELECTOR, "#chat-log")
        WebDriverWait(self.bob, WAIT).until(lambda _: "hello" in log.get_property("value"))
        self.assertEqual(typing.text, "")
        # Alice is a guest, and her message says so beside her name.
        badges = log.find_elements(By.CSS_SELECTOR, ".msg .author + .badge")
        self.assertEqual([badge.text for badge in badges], ["guest"])


class PresenceTests(TwoPeople):
    def test_each_sees_the_other_arrive_and_leave(self) -> None:
        alice_name = self.open_room(self.alice, "arrivals")

        def here(driver: WebDriver) -> set[str]:
            people = driver.execute_script("return document.body.dataset.people") or ""
            return set(people.split(",")) - {""}

        WebDriverWait(self.alice, WAIT).until(lambda d: here(d) == {alice_name})
        bob_name = self.open_room(self.bob, "arrivals")
        WebDriverWait(self.alice, WAIT).until(lambda d: here(d) == {alice_name, bob_name})
        WebDriverWait(self.bob, WAIT).until(lambda d: here(d) == {alice_name, bob_name})
        line = self.alice.find_element(By.CSS_SELECTOR, "#people").text
        # Bob is a guest, and the line says so, as beside his messages.
        self.assertIn(f"{bob_name} (guest)", line)
        self.bob.get("about:blank")  # Bob leaves the room
        WebDriverWait(self.alice, WAIT).until(lambda d: here(d) == {alice_name})
