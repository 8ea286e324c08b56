"""HTTP hardening: the deploy check, HTTPS from the environment, headers, the admin login."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from django.http import HttpResponse, HttpResponseBase
from django.test import Client
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

from chat.testing.browser import LiveChatServerMixin, chromium
from chat.testing.redis_server import free_port
from mysite.admin_throttle import limiter
from mysite.tests.test_settings import run_in_fresh_process

# What an operator sets behind nginx, and nothing else (docs/deployment.md).
DEPLOYED = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
    "DJANGO_ALLOWED_HOSTS": "chat.example.com",
    "DJANGO_HTTPS": "1",
}
DEPLOY_CHECK = ["manage.py", "check", "--deploy", "--fail-level", "WARNING"]


def test_deploy_check_passes_on_environment_variables_alone() -> None:
    result = run_in_fresh_process(DEPLOY_CHECK, **DEPLOYED)
    assert result.returncode == 0, result.stderr


def test_deploy_check_fails_without_https() -> None:
    result = run_in_fresh_process(
        DEPLOY_CHECK, **{k: v for k, v in DEPLOYED.items() if k != "DJANGO_HTTPS"}
    )
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


# A page that reads no table: the fresh process has no migrated database.
PAGE = "/accounts/login/"
FETCH_TWICE = """
import json, django
django.setup()
from django.test import Client
client = Client(HTTP_HOST="{host}")
print(json.dumps([
    {{"status": r.status_code, "headers": dict(r.headers)}}
    for r in (client.get(PAGE), client.get(PAGE, HTTP_X_FORWARDED_PROTO="https"))
]))
"""


def fetch_twice(host: str, env: dict[str, str]) -> list[dict[str, Any]]:
    """GET a page plainly and as forwarded by nginx from https, in a fresh process."""
    result = run_in_fresh_process(
        ["-c", FETCH_TWICE.replace("PAGE", repr(PAGE)).format(host=host)],
        DJANGO_SETTINGS_MODULE="mysite.settings",
        **env,
    )
    assert result.returncode == 0, result.stderr
    responses: list[dict[str, Any]] = json.loads(result.stdout)
    return responses


def test_https_redirects_plain_http_and_sends_hsts() -> None:
    plain, forwarded = fetch_twice("chat.example.com", DEPLOYED)
    assert plain["status"] == 301
    assert plain["headers"]["Location"] == f"https://chat.example.com{PAGE}"
    assert forwarded["status"] == 200
    assert forwarded["headers"]["Strict-Transport-Security"] == "max-age=31536000"
    assert "wss://chat.example.com" in forwarded["headers"]["Content-Security-Policy"]


def test_development_defaults_serve_plain_http() -> None:
    plain, forwarded = fetch_twice("localhost", {})
    # X-Forwarded-Proto is not trusted unless DJANGO_HTTPS says a proxy sets it.
    for response in (plain, forwarded):
        assert response["status"] == 200
        assert "Strict-Transport-Security" not in response["headers"]
        assert "ws://localhost" in response["headers"]["Content-Security-Policy"]


# --- headers on every page -------------------------------------------------------------------

PAGES = [
    pytest.param("/chat/", 200, id="index"),
    pytest.param("/chat/lobby/", 200, id="room"),
    pytest.param("/chat/has%20space/", 404, id="invalid-room"),
    pytest.param("/no/such/page/", 404, id="not-found"),
    pytest.param("/admin/login/", 200, id="admin-login"),
]


def policy(response: HttpResponseBase) -> dict[str, list[str]]:
    """The Content-Security-Policy header as {directive: sources}."""
    directives = (part.split() for part in response["Content-Security-Policy"].split(";"))
    return {words[0]: words[1:] for words in directives if words}


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "status"), PAGES)
def test_every_page_sends_the_security_headers(client: Client, path: str, status: int) -> None:
    response = client.get(path)
    assert response.status_code == status
    assert policy(response) == {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'", "ws://testserver"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "status"), PAGES)
def test_no_page_has_inline_style(client: Client, path: str, status: int) -> None:
    html = client.get(path).content.decode()
    # style-src falls back to 'self': an inline style would be blocked, so there must be none.
    assert " style=" not in html
    assert "<style" not in html


def test_a_page_over_https_may_connect_to_its_own_wss_origin(client: Client) -> None:
    response = client.get(PAGE, secure=True)
    assert policy(response)["connect-src"] == ["'self'", "wss://testserver"]


# --- the admin login throttle ----------------------------------------------------------------

PASSWORD = "a-long-right-password"


@pytest.fixture
def fresh_counters(settings: Any) -> Iterator[None]:
    """Counters in this process's memory, new for each test, at the default limit."""
    settings.CHAT_LIMITS_ENABLED = True
    settings.CHAT_LIMITS_STORAGE = "memory://"
    settings.CHAT_LIMIT_ADMIN_LOGIN = "5/minute"
    limiter.cache_clear()
    yield
    limiter.cache_clear()


@pytest.fixture
def admins(django_user_model: Any, fresh_counters: None) -> list[str]:
    """Two staff users who know their password, and login counters of their own."""
    for name in ("boss", "deputy"):
        django_user_model.objects.create_superuser(name, password=PASSWORD)
    return ["boss", "deputy"]


def log_in(username: str, password: str, address: str) -> HttpResponse:
    """POST the admin login form from a client address, in a browser session of its own."""
    response = Client().post(
        "/admin/login/",
        {"username": username, "password": password, "next": "/admin/"},
        REMOTE_ADDR=address,
    )
    assert isinstance(response, HttpResponse)
    return response


def assert_refused(response: HttpResponse) -> None:
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "no-cache" in response["Cache-Control"]


def assert_failed(response: HttpResponse) -> None:
    assert response.status_code == 200
    assert b"Please enter the correct username and password" in response.content


def assert_logged_in(response: HttpResponse) -> None:
    assert response.status_code == 302
    assert response["Location"] == "/admin/"


@pytest.mark.django_db
def test_an_address_that_failed_too_often_is_refused(admins: list[str]) -> None:
    for attempt in range(5):
        assert_failed(log_in(f"guess-{attempt}", "wrong", "203.0.113.5"))
    # Refused before the password is looked at: the right one does not help.
    assert_refused(log_in("boss", PASSWORD, "203.0.113.5"))
    # Another address is not affected.
    assert_logged_in(log_in("boss", PASSWORD, "198.51.100.7"))


@pytest.mark.django_db
def test_a_username_that_failed_too_often_is_refused_from_any_address(admins: list[str]) -> None:
    for attempt in range(5):
        assert_failed(log_in("boss", "wrong", f"203.0.113.{attempt}"))
    assert_refused(log_in("boss", PASSWORD, "198.51.100.7"))
    assert_refused(log_in("BOSS", PASSWORD, "198.51.100.8"))
    # Another user at the same address is not affected.
    assert_logged_in(log_in("deputy", PASSWORD, "198.51.100.7"))


@pytest.mark.django_db
def test_successful_logins_do_not_count(admins: list[str]) -> None:
    for _ in range(7):
        assert_logged_in(log_in("boss", PASSWORD, "203.0.113.5"))


@pytest.mark.django_db
def test_the_limit_comes_from_settings(settings: Any, admins: list[str]) -> None:
    settings.CHAT_LIMIT_ADMIN_LOGIN = "10/minute;2/hour"
    for _ in range(2):
        assert_failed(log_in("boss", "wrong", "203.0.113.5"))
    refused = log_in("boss", PASSWORD, "203.0.113.5")
    assert refused.status_code == 429
    # The hourly rate refused it: the wait is the hour's, not the minute's.
    assert 60 < int(refused["Retry-After"]) <= 3600


@pytest.mark.django_db
def test_limits_off_lifts_the_throttle(settings: Any, admins: list[str]) -> None:
    settings.CHAT_LIMITS_ENABLED = False
    for _ in range(7):
        assert_failed(log_in("boss", "wrong", "203.0.113.5"))
    assert_logged_in(log_in("boss", PASSWORD, "203.0.113.5"))


@pytest.mark.django_db
def test_a_broken_counter_store_lets_logins_through(settings: Any, admins: list[str]) -> None:
    settings.CHAT_LIMITS_STORAGE = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    for _ in range(7):
        assert_failed(log_in("boss", "wrong", "203.0.113.5"))
    assert_logged_in(log_in("boss", PASSWORD, "203.0.113.5"))


# --- the policy in a real browser ------------------------------------------------------------

# Runs before any page script: records every violation the page reports.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(event.effectiveDirective + " " + event.blockedURI);
});
"""
# Loading an image from elsewhere must be blocked: proof that the policy is enforced and seen.
PROBE = "https://probe.invalid/pixel.png"
WAIT = 5


@pytest.mark.browser
@pytest.mark.redis
class PolicyInBrowserTests(LiveChatServerMixin, ChannelsLiveServerTestCase):
    serve_static = True

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        try:
            cls.driver = chromium()
            cls.driver.execute_cdp_cmd(
                "Page.addScriptToEvaluateOnNewDocument", {"source": RECORD_VIOLATIONS}
            )
        except BaseException:
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        cls.driver.quit()
        super().tearDownClass()

    def assert_page_has_no_violations(self) -> None:
        """Only the probe is blocked on the current page."""
        self.driver.execute_script(
            "const img = document.createElement('img');"
            "img.src = arguments[0]; document.body.append(img);",
            PROBE,
        )
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.execute_script("return window.cspViolations.length") > 0
        )
        violations = self.driver.execute_script("return window.cspViolations")
        self.assertEqual(violations, [f"img-src {PROBE}"])

    def test_chat_pages_work_under_the_policy(self) -> None:
        self.driver.get(f"{self.live_server_url}/chat/")
        self.assertEqual(
            self.driver.switch_to.active_element.get_attribute("id"), "room-name-input"
        )
        self.assert_page_has_no_violations()
        self.driver.switch_to.active_element.send_keys("csp" + Keys.ENTER)
        WebDriverWait(self.driver, WAIT).until(
            lambda d: d.execute_script("return document.body.dataset.wsState") == "open"
        )
        self.driver.switch_to.active_element.send_keys("under the policy" + Keys.ENTER)
        log = self.driver.find_element(By.CSS_SELECTOR, "#chat-log")
        WebDriverWait(self.driver, WAIT).until(
            lambda _: "under the policy" in log.get_property("value")
        )
        self.assert_page_has_no_violations()

    def test_admin_login_works_under_the_policy(self) -> None:
        get_user_model().objects.create_superuser("boss", password=PASSWORD)
        self.driver.get(f"{self.live_server_url}/admin/login/")
        self.assert_page_has_no_violations()
        self.driver.find_element(By.NAME, "username").send_keys("boss")
        self.driver.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
        WebDriverWait(self.driver, WAIT).until(lambda d: d.current_url.endswith("/admin/"))
        self.assertIn("Site administration", self.driver.page_source)
        self.assert_page_has_no_violations()
