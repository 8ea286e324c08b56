"""Accounts and guest names in a real browser: a guest renames; someone signs up, in and out.

One test per class, so each gets a live server of its own: a second test in one class
(after TransactionTestCase's flush) met "database disk image is malformed" in the server's
reader connections about four runs in five, and the hub then took the room for deleted.
"""

from channels.testing import ChannelsLiveServerTestCase
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from chat.testing.browser import LiveChatBrowsersMixin

WAIT = 10
PASSWORD = "a-long-right-password"


class BrowserTestCase(LiveChatBrowsersMixin, ChannelsLiveServerTestCase):
    serve_static = True

    browsers = ("first", "second")

    def wait(self, driver: WebDriver) -> WebDriverWait[WebDriver]:
        # A form post replaces the page: an element found on the old one may go stale.
        return WebDriverWait(
            driver,
            WAIT,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )

    def wait_for_room(self, driver: WebDriver, name: str) -> None:
        """Wait until the room page shows `name` in its header and its socket is synced."""
        self.wait(driver).until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, ".account .me").text == name
                and d.execute_script("return document.body.dataset.synced") == "true"
            )
        )

    def open_room(self, driver: WebDriver, room: str) -> str:
        """Open a room and wait until its socket is synced; return the name the page shows."""
        driver.get(f"{self.live_server_url}/chat/{room}/")
        self.wait(driver).until(
            lambda d: d.execute_script("return document.body.dataset.synced") == "true"
        )
        return str(driver.find_element(By.CSS_SELECTOR, ".account .me").text)

    def post(self, driver: WebDriver, text: str) -> None:
        driver.find_element(By.CSS_SELECTOR, "#chat-message-input").send_keys(text + Keys.ENTER)

    def wait_for_author(self, driver: WebDriver, text: str) -> str:
        """Wait until a message with this text is in the log; return its author as shown."""
        # A stored message's row has its sequence number; a pending one's author is "sending…".
        row = f"//*[@id='chat-log']/*[@data-seq][*[@class='text' and .='{text}']]"
        try:
            self.wait(driver).until(lambda d: d.find_elements(By.XPATH, row))
        except Exception:
            print(
                "DEBUG",
                driver.execute_script("return JSON.stringify(document.body.dataset)"),
                repr(driver.find_element(By.CSS_SELECTOR, "#chat-log").get_property("value")),
            )
            raise
        # textContent: a message that continues its author's run shows the name to screen
        # readers only.
        author = driver.find_element(By.XPATH, row + "//*[@class='author']")
        return str(author.get_attribute("textContent"))

    def fill(self, driver: WebDriver, fields: dict[str, str]) -> None:
        for name, value in fields.items():
            box = driver.find_element(By.NAME, name)
            box.clear()
            box.send_keys(value)
        box.send_keys(Keys.ENTER)


class GuestNameTests(BrowserTestCase):
    def test_a_guest_renames_and_the_other_browser_sees_the_new_name(self) -> None:
        self.open_room(self.first, "renaming")
        self.open_room(self.second, "renaming")
        self.first.find_element(By.CSS_SELECTOR, ".rename summary").click()
        self.fill(self.first, {"name": "Zoë Renamed"})
        self.wait_for_room(self.first, "Zoë Renamed")
        # The page came back with the tutorial's focus: typing + Enter posts.
        active = self.first.switch_to.active_element
        self.assertEqual(active.get_attribute("id"), "chat-message-input")
        self.post(self.first, "hello under my new name")
        self.assertEqual(
            self.wait_for_author(self.second, "hello under my new name"), "Zoë Renamed"
        )


class AccountTests(BrowserTestCase):
    def test_sign_up_post_sign_out_and_sign_in_again(self) -> None:
        driver = self.first
        guest_name = self.open_room(driver, "members")
        driver.find_element(By.CSS_SELECTOR, "#sign-up").click()
        self.wait(driver).until(lambda d: d.find_element(By.NAME, "password2"))
        self.fill(driver, {"username": "dora", "password1": PASSWORD, "password2": PASSWORD})
        self.wait_for_room(driver, "dora")
        self.assertTrue(driver.current_url.endswith("/chat/members/"))
        self.post(driver, "signed up and posting")
        self.assertEqual(self.wait_for_author(driver, "signed up and posting"), "dora")

        driver.find_element(By.CSS_SELECTOR, "#sign-out").click()
        self.wait_for_room(driver, guest_name)  # a guest again, under the same guest name
        self.assertTrue(driver.find_element(By.CSS_SELECTOR, ".account .badge").is_displayed())

        driver.find_element(By.CSS_SELECTOR, "#sign-in").click()
        self.wait(driver).until(lambda d: d.find_element(By.NAME, "password"))
        self.fill(driver, {"username": "dora", "password": PASSWORD})
        self.wait_for_room(driver, "dora")
        self.post(driver, "signed in and posting")
        self.assertEqual(self.wait_for_author(driver, "signed in and posting"), "dora")
        driver.find_element(By.CSS_SELECTOR, "#sign-out").click()
        self.wait_for_room(driver, guest_name)
