"""Headless Chromium for Selenium tests, and a live server that runs on a real Redis."""

from __future__ import annotations

import os
import shutil
import unittest
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync
from daphne.testing import DaphneProcess
from django.test import override_settings
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from chat.testing.redis_server import RedisUnavailable, shared_redis_url
from mysite.settings import channel_layers_config

# Chromium as root in a container: no sandbox, no GPU, no phoning home.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1200,900",
)


def in_ci() -> bool:
    """True under CI, where a missing browser or Redis must fail rather than skip."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(what: str) -> Exception:
    message = f"{what} is not installed (make test installs it)"
    return RuntimeError(message) if in_ci() else unittest.SkipTest(message)


def chromium() -> webdriver.Chrome:
    """A headless Chromium driven by Debian's chromedriver (Selenium's download can't work here)."""
    binary = (
        os.environ.get("CHROMIUM_BIN")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    driver = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
    if binary is None or driver is None:
        raise _missing("chromium or chromedriver")
    options = Options()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


class ForkSafeDaphneProcess(DaphneProcess):
    """daphne's test server process, with a working executor for thread-sensitive calls.

    The live server is forked from the test process. If the parent has already used asgiref's
    one-thread executor (any consumer test has), the child inherits the executor but not its
    thread, and every `database_sync_to_async` call there (AuthMiddleware's, say) waits forever.

    Upstream, https://github.com/django/asgiref/issues/194 reported asgiref hanging in a process
    forked after `sync_to_async` had run. Its fix made asgiref drop the stored main event loop
    in a forked child (a pid check), but not `SyncToAsync.single_thread_executor`: in asgiref
    3.13 that executor is still made once, at import, and kept across a fork. No upstream issue
    about the executor itself was found.
    """

    def run(self) -> None:
        SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)
        super().run()


class LiveChatServerMixin:
    """Runs a ChannelsLiveServerTestCase's server in a fork-safe process on a real Redis.

    The live server is a forked process: settings must be in place before it starts.
    """

    ProtocolServerProcess = ForkSafeDaphneProcess
    _redis_layers: Any

    @classmethod
    def setUpClass(cls) -> None:
        try:
            url = shared_redis_url()
        except RedisUnavailable:
            raise _missing("redis-server") from None
        cls._redis_layers = override_settings(CHANNEL_LAYERS=channel_layers_config(url))
        cls._redis_layers.enable()
        try:
            super().setUpClass()  # type: ignore[misc]
        except BaseException:
            cls._redis_layers.disable()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            super().tearDownClass()  # type: ignore[misc]
        finally:
            cls._redis_layers.disable()


class LiveChatBrowsersMixin(LiveChatServerMixin):
    """A live chat server, and one headless Chromium per name in `browsers`, started once for
    the class (as class attributes of those names) and quit at its end."""

    browsers: tuple[str, ...] = ("driver",)

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        started: list[webdriver.Chrome] = []
        try:
            for name in cls.browsers:
                started.append(chromium())
                setattr(cls, name, started[-1])
        except BaseException:
            for driver in started:
                driver.quit()
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            for name in cls.browsers:
                getattr(cls, name).quit()
        finally:
            super().tearDownClass()
