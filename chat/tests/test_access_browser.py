"""Private rooms and bans in a real browser: a non-member is refused, a removed member and a
banned person are cut off at once and stay out.

One test per class, each on a live server of its own (see test_accounts_browser.py for why).
"""

from __future__ import annotations

from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth.models import User
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from chat.models import Ban
from chat.private_rooms import member_add, member_remove, private_room_create
from chat.testing.browser import LiveChatBrowsersMixin

WAIT = 10
PASSWORD = "a-long-right-password"


class SignedInBrowser(LiveChatBrowsersMixin, ChannelsLiveServerTestCase):
    serve_static = True

    browsers = ("driver",)

    def wait(self) -> WebDriverWait[WebDriver]:
        return WebDriverWait(
            self.driver,
            WAIT,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )

    def sign_in(self, username: str) -> User:
        """Create an account and sign in with it on the sign-in page, as a person would."""
        user = User.objects.create_user(username, password=PASSWORD)
        self.driver.get(f"{self.live_server_url}/accounts/login/")
        self.driver.find_element(By.NAME, "username").send_keys(username)
        self.driver.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
        self.wait().until(lambda d: d.find_element(By.CSS_SELECTOR, ".account .me").text)
        return user

    def open_room(self, room: str) -> None:
        self.driver.get(f"{self.live_server_url}/chat/{room}/")
        self.wait().until(
            lambda d: d.execute_script("return document.body.dataset.synced") == "true"
        )

    def forbidden_reason(self, room: str) -> str:
        """Load the room's page and return why it was refused (the 403 page says)."""
        self.driver.get(f"{self.live_server_url}/chat/{room}/")
        page = self.wait().until(lambda d: d.find_element(By.CSS_SELECTOR, "#forbidden"))
        return str(page.get_attribute("data-reason"))

    def wait_until_refused(self) -> None:
        """The room's socket was closed for good: the page says so and does not reconnect."""
        self.wait().until(
            lambda d: d.execute_script("return document.body.dataset.wsState") == "refused"
        )
        status = self.driver.find_element(By.CSS_SELECTOR, "#connection-status")
        self.assertEqual(status.text, "Not allowed here")


class PrivateRoomTests(SignedInBrowser):
    def test_a_non_member_is_refused_and_a_removed_member_is_cut_off(self) -> None:
        owner = User.objects.create_user("olga", password=PASSWORD)
        room = private_room_create(name="backstage", owner_id=owner.pk)
        nina = self.sign_in("nina")
        self.assertEqual(self.forbidden_reason("backstage"), "private")

        member_add(room=room, username="nina", added_by_id=owner.pk)
        self.open_room("backstage")
        member_remove(room=room, user_id=nina.pk)
        self.wait_until_refused()
        self.assertEqual(self.forbidden_reason("backstage"), "private")


class BanTests(SignedInBrowser):
    def test_a_banned_person_is_cut_off_at_once_and_kept_out(self) -> None:
        troll = self.sign_in("troll")
        self.open_room("lobby")
        Ban.objects.create(user=troll, reason="Flooding the lobby.")
        self.wait_until_refused()
        self.assertEqual(self.forbidden_reason("lobby"), "banned")
        self.assertIn("Flooding the lobby.", self.driver.find_element(By.ID, "forbidden").text)
