"""Browser tests beyond the tutorial's: untrusted text, the room-name rule, focus."""

from channels.testing import ChannelsLiveServerTestCase
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

from chat.testing.browser import LiveChatBrowsersMixin

WAIT = 5


class RoomPageTests(LiveChatBrowsersMixin, ChannelsLiveServerTestCase):
    serve_static = True

    browsers = ("driver",)

    def open_room(self, room: str) -> None:
        self.driver.get(f"{self.live_server_url}/chat/{room}/")
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.execute_script("return document.body.dataset.wsState") == "open"
        )

    def log_text(self) -> str:
        return self.driver.find_element(By.CSS_SELECTOR, "#chat-log").get_property("value")

    def test_markup_in_a_message_shows_as_text_and_creates_no_element(self) -> None:
        payload = "<img src=x onerror=alert(1)><script>alert(2)</script><b>bold</b>"
        self.open_room("xss")
        box = self.driver.find_element(By.CSS_SELECTOR, "#chat-message-input")
        box.send_keys(payload + Keys.ENTER)
        WebDriverWait(self.driver, WAIT).until(lambda _: payload in self.log_text())
        log = self.driver.find_element(By.CSS_SELECTOR, "#chat-log")
        self.assertEqual(log.find_elements(By.CSS_SELECTOR, "img, script, b"), [])
        with self.assertRaises(NoAlertPresentException):
            self.driver.switch_to.alert.text  # noqa: B018 (raises when no alert is open)

    def test_message_input_is_focused_and_enter_posts(self) -> None:
        self.open_room("focus")
        active = self.driver.switch_to.active_element
        self.assertEqual(active.get_attribute("id"), "chat-message-input")
        active.send_keys("typed and entered" + Keys.ENTER)
        WebDriverWait(self.driver, WAIT).until(lambda _: "typed and entered" in self.log_text())
        self.assertEqual(
            self.driver.find_element(By.CSS_SELECTOR, "#chat-message-input").get_property("value"),
            "",
        )

    def test_room_picker_explains_an_invalid_name_instead_of_navigating(self) -> None:
        self.driver.get(f"{self.live_server_url}/chat/")
        active = self.driver.switch_to.active_element
        self.assertEqual(active.get_attribute("id"), "room-name-input")
        active.send_keys("no spaces allowed" + Keys.ENTER)
        error = self.driver.find_element(By.CSS_SELECTOR, "#room-name-error")
        WebDriverWait(self.driver, WAIT).until(lambda _: error.is_displayed())
        self.assertIn("not a room name", error.text)
        self.assertTrue(self.driver.current_url.endswith("/chat/"))
        # Fixing the name and clicking the button goes to the room.
        active.clear()
        active.send_keys("fixed.name")
        self.driver.find_element(By.CSS_SELECTOR, "#room-name-submit").click()
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.current_url.endswith("/chat/fixed.name/")
        )
