"""deploy/nginx.conf, as shipped, in front of three daphne processes on one Redis and one
PostgreSQL: pages, static files, sockets and sign-in over TLS, and a killed process whose
clients reconnect through nginx to the others and converge with nothing lost.

nginx listens on free ports with a certificate made for the test (chat/testing/nginx.py); the
processes run as an operator runs them (DJANGO_DEBUG=0, DJANGO_HTTPS=1, --proxy-headers, the
rate limits on, collected static files).
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import re
import secrets
import ssl
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest
from selenium.webdriver import Chrome
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.wait import WebDriverWait

from chat.testing.browser import chromium
from chat.testing.client import ResumingClient
from chat.testing.nginx import NginxServer, NginxUnavailable
from chat.testing.pages import dataset, wait_dataset
from chat.testing.postgres_server import PostgresUnavailable, postgres_url
from chat.testing.redis_server import RedisServer, RedisUnavailable, free_port
from chat.testing.server import ROOT, DaphneServer
from conftest import IN_CI

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.timeout(120)]

PROCESSES = 3
WAIT = 30


def _needed(error: Exception) -> None:
    """A missing nginx, Redis or PostgreSQL: skip, except under CI, where it fails."""
    if IN_CI:
        raise error
    pytest.skip(str(error))


@dataclass
class Cluster:
    """nginx, PROCESSES daphnes behind it, one Redis, one PostgreSQL database."""

    database_url: str
    daphnes: list[DaphneServer]
    nginx: NginxServer
    tls: ssl.SSLContext
    rooms: Iterator[int] = field(default_factory=lambda: iter(range(1, 1_000)))

    def room(self) -> str:
        """A room no other test of the module uses."""
        return f"nginx-{next(self.rooms)}"

    def client(self, room: str) -> ResumingClient:
        """A resuming protocol client that reaches the room through nginx."""
        return ResumingClient(self.nginx.wss_url, room, ssl_context=self.tls)

    def stored(self, room: str) -> list[tuple[int, str]]:
        """(seq, text) of every message stored in a room, in order."""
        import psycopg

        with psycopg.connect(self.database_url) as db:
            rows = db.execute(
                "SELECT m.seq, m.body FROM chat_message m JOIN chat_room r ON r.id = m.room_id"
                " WHERE r.name = %s ORDER BY m.seq",
                (room,),
            ).fetchall()
        return [(seq, body) for seq, body in rows]


def open_sockets(daphne: DaphneServer) -> int:
    """Chat sockets open in one process, from its /metrics (asked directly, from loopback)."""
    request = urllib.request.Request(
        f"{daphne.http_url}/metrics",
        # DJANGO_HTTPS=1 redirects what nginx did not mark as https, probes included.
        headers={"X-Forwarded-Proto": "https"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    match = re.search(r"^chat_open_sockets (\S+)$", text, re.MULTILINE)
    assert match is not None, "no chat_open_sockets in /metrics"
    return int(float(match.group(1)))


async def sockets_per_process(cluster: Cluster, total: int) -> list[int]:
    """Each process's open sockets, once they add up to `total` (sockets settle as they open)."""
    async with asyncio.timeout(WAIT):
        while True:
            counts = [open_sockets(daphne) for daphne in cluster.daphnes if daphne.process]
            if sum(counts) == total:
                return counts
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        server_url = postgres_url()
        redis = RedisServer().start()
    except (PostgresUnavailable, RedisUnavailable) as error:
        _needed(error)
    import psycopg

    name = f"chat_nginx_{secrets.token_hex(4)}"
    admin_url = server_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    database_url = server_url.rsplit("/", 1)[0] + f"/{name}"
    static = Path(tempfile.mkdtemp(prefix="chat-static-")) / "static"
    https_port = free_port()
    env = {
        "DATABASE_URL": database_url,
        "DJANGO_HTTPS": "1",
        "DJANGO_STATIC_ROOT": str(static),
        # nginx's $host has no port: a site on a port other than 443 names its origin here
        # (docs/deployment.md, "WebSocket Origin").
        "DJANGO_CSRF_TRUSTED_ORIGINS": f"https://127.0.0.1:{https_port}",
        "CHAT_LIMITS": "on",
        # The limits on (sign-in's is tested below), but every socket here comes from one
        # address, 127.0.0.1, whose posts (and first posts to a room not yet stored) would
        # soon be refused: those two are raised.
        "CHAT_LIMIT_NEW_ROOMS_PER_ADDRESS": "1000/minute",
        "CHAT_LIMIT_POSTS_PER_ADDRESS": "1000/second",
    }
    first = DaphneServer(redis_url=redis.url, extra_env=env, daphne_args=["--proxy-headers"])
    daphnes = [first.migrate()] + [
        DaphneServer(
            redis_url=redis.url,
            database=first.database,
            extra_env=env,
            daphne_args=["--proxy-headers"],
        )
        for _ in range(PROCESSES - 1)
    ]
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=first.env,
        check=True,
    )
    nginx = NginxServer(
        upstream_ports=[daphne.port for daphne in daphnes],
        static_root=static,
        https_port=https_port,
    )
    try:
        for daphne in daphnes:
            daphne.start()
        try:
            nginx.start()
        except NginxUnavailable as error:
            _needed(error)
        tls = ssl.create_default_context(cafile=str(nginx.certificate))
        yield Cluster(database_url=database_url, daphnes=daphnes, nginx=nginx, tls=tls)
    finally:
        nginx.stop()
        for daphne in daphnes:
            daphne.stop()
        redis.stop()
        with psycopg.connect(admin_url, autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Room:
    """Resuming clients of one room through nginx, running until close()."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.clients: list[ResumingClient] = []
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def join(self, count: int) -> list[ResumingClient]:
        """Connect `count` more clients, one after the other (nginx spreads them in turn)."""
        return [await self.join_one() for _ in range(count)]

    async def join_one(self) -> ResumingClient:
        client = self.cluster.client(self.name)
        self.clients.append(client)
        self.tasks.append(asyncio.create_task(client.run(self.stop)))
        async with asyncio.timeout(WAIT):
            await client.wait_until(lambda: client.socket is not None)
        return client

    async def post_round(self, label: str, each: int) -> list[str]:
        texts = []
        for n in range(each):
            for index, client in enumerate(self.clients):
                text = f"{label}-{index}-{n}"
                texts.append(text)
                await client.post(text)
        return texts

    async def converge(self) -> list[tuple[int, str]]:
        """Wait until nothing is pending anywhere and every client holds what is stored."""
        async with asyncio.timeout(WAIT):
            await self.until_each(lambda client: not client.pending)
            stored = await asyncio.to_thread(self.cluster.stored, self.name)
            await self.until_each(lambda client: client.last_seq >= len(stored))
        return stored

    async def until_each(self, condition: Callable[[ResumingClient], bool]) -> None:
        for client in self.clients:
            await client.wait_until(functools.partial(condition, client))

    def assert_everyone_holds(self, stored: list[tuple[int, str]], posted: list[str]) -> None:
        assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))
        assert sorted(text for _, text in stored) == sorted(posted)
        for client in self.clients:
            assert client.messages == dict(stored)
            # In order and never twice, across processes and reconnects.
            assert client.order == list(range(1, len(stored) + 1))

    async def close(self) -> None:
        self.stop.set()
        for client in self.clients:
            await client.drop()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def https_get(cluster: Cluster, path: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", cluster.nginx.https_port, context=cluster.tls, timeout=10
    )
    connection.request("GET", path, headers={"Accept-Encoding": "gzip"})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_pages_static_files_and_probes_through_nginx(cluster: Cluster) -> None:
    page = https_get(cluster, "/chat/")
    assert page.status == 200
    assert "max-age=31536000" in (page.getheader("Strict-Transport-Security") or "")
    # The page links the hashed stylesheet; nginx serves it from disk, compressed, for good.
    body = urllib.request.urlopen(
        f"{cluster.nginx.https_url}/chat/", context=cluster.tls, timeout=10
    ).read()
    (stylesheet,) = re.findall(rb'href="(/static/chat/chat\.[0-9a-f]{12}\.css)"', body)
    static = https_get(cluster, stylesheet.decode())
    assert static.status == 200
    assert static.getheader("Content-Encoding") == "gzip"
    assert static.getheader("Cache-Control") == "max-age=315360000, public, immutable"
    assert https_get(cluster, "/static/chat/chat.css").getheader("Cache-Control") == (
        "max-age=60, public"
    )
    # Probes and metrics are not for the internet.
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert https_get(cluster, probe).status == 404
    # Plain http is sent to https.
    plain = http.client.HTTPConnection("127.0.0.1", cluster.nginx.http_port, timeout=10)
    plain.request("GET", "/chat/lobby/?x=1")
    redirect = plain.getresponse()
    assert redirect.status == 301
    assert redirect.getheader("Location") == f"{cluster.nginx.https_url}/chat/lobby/?x=1"
    plain.close()


async def test_clients_across_processes_survive_a_killed_one(cluster: Cluster) -> None:
    room = Room(cluster, cluster.room())
    await room.join(2 * PROCESSES)
    # nginx gave every process sockets of the room: each message crosses processes.
    counts = await sockets_per_process(cluster, 2 * PROCESSES)
    assert all(counts), f"sockets per process: {counts}"
    try:
        posted = await room.post_round("before", each=3)
        stored = await room.converge()
        room.assert_everyone_holds(stored, posted)

        # A late joiner gets the history, from whichever process it lands on.
        (late,) = await room.join(1)
        await late.wait_until(lambda: late.last_seq >= len(stored))
        assert late.messages == dict(stored)

        victim = cluster.daphnes[0]
        on_victim = open_sockets(victim)
        victim.kill()
        # Posted at once: those of the victim's clients wait, pending, for their reconnect.
        posted += await room.post_round("after", each=3)
        stored = await room.converge()
        room.assert_everyone_holds(stored, posted)
        reconnected = [client for client in room.clients if client.connections > 1]
        assert len(reconnected) == on_victim > 0
        # Every client is on a surviving process now.
        await sockets_per_process(cluster, len(room.clients))
    finally:
        await room.close()
        if cluster.daphnes[0].process is None:
            cluster.daphnes[0].start()


# --- A browser through nginx ------------------------------------------------------------------


def shown(driver: Chrome) -> list[tuple[int, str]]:
    """(seq, text) of every message row on the page, top to bottom."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#chat-log .msg[data-seq]')]"
        ".map(row => [Number(row.dataset.seq), row.querySelector('.text').textContent])"
    )
    return [(seq, text) for seq, text in rows]


@pytest.fixture
def browser() -> Iterator[Chrome]:
    driver = chromium()
    # The test's certificate is self-signed.
    driver.execute_cdp_cmd("Security.setIgnoreCertificateErrors", {"ignore": True})
    yield driver
    driver.quit()


@pytest.mark.browser
async def test_a_page_whose_process_is_killed_reconnects_through_nginx(
    cluster: Cluster, browser: Chrome
) -> None:
    name = cluster.room()
    browser.get(f"{cluster.nginx.https_url}/chat/{name}/")
    wait_dataset(browser, "wsState", "open")
    counts = await sockets_per_process(cluster, 1)
    victim = cluster.daphnes[counts.index(1)]
    # Python clients until one is on another process than the page.
    room = Room(cluster, name)
    try:
        while True:
            await room.join(1)
            counts = await sockets_per_process(cluster, 1 + len(room.clients))
            if sum(counts) - open_sockets(victim) > 0:
                break
        posted = await room.post_round("python", each=2)
        input_box = browser.find_element(By.CSS_SELECTOR, "#chat-message-input")
        input_box.send_keys("from the page" + Keys.ENTER)
        posted.append("from the page")
        stored = await room.converge()
        WebDriverWait(browser, WAIT).until(lambda d: len(shown(d)) == len(posted))

        victim.kill()
        # The page posts while it reconnects; the Python clients post meanwhile.
        browser.find_element(By.CSS_SELECTOR, "#chat-message-input").send_keys(
            "while away" + Keys.ENTER
        )
        posted.append("while away")
        posted += await room.post_round("meanwhile", each=2)
        WebDriverWait(browser, WAIT).until(lambda d: len(shown(d)) == len(posted))
        wait_dataset(browser, "pending", "0")
        stored = await room.converge()
        room.assert_everyone_holds(stored, posted)
        assert shown(browser) == stored
        assert dataset(browser, "wsState") == "open"
    finally:
        await room.close()
        if victim.process is None:
            victim.start()


# --- Signing in over TLS ----------------------------------------------------------------------


class Visitor:
    """An HTTP client with cookies, from its own loopback address, through nginx over TLS."""

    def __init__(self, cluster: Cluster, address: str) -> None:
        self.cluster = cluster
        self.address = address
        self.cookies: dict[str, str] = {}
        self.secure_cookies: set[str] = set()

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, origin: str = ""
    ) -> tuple[int, str]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1",
            self.cluster.nginx.https_port,
            context=self.cluster.tls,
            timeout=10,
            source_address=(self.address, 0),
        )
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = origin or self.cluster.nginx.https_url
            headers["Referer"] = self.cluster.nginx.https_url + path
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie(header)
            for key, morsel in cookie.items():
                self.cookies[key] = morsel.value
                if morsel["secure"]:
                    self.secure_cookies.add(key)
        connection.close()
        return response.status, text

    def post_form(self, path: str, fields: dict[str, str], origin: str = "") -> int:
        """GET the form's page (a CSRF cookie and token), then POST the fields to it."""
        status, page = self.request("GET", path)
        assert status == 200
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert match is not None
        status, _ = self.request(
            "POST", path, {"csrfmiddlewaretoken": match.group(1), **fields}, origin=origin
        )
        return status


def test_sign_in_behind_a_tls_proxy(cluster: Cluster) -> None:
    """CSRF's origin check passes over TLS at nginx, and failed sign-ins count per address."""
    password = secrets.token_urlsafe(12)
    alice = Visitor(cluster, "127.0.0.3")
    account = {"username": "alice", "password1": password, "password2": password}
    # Another site's form is refused by the same check that lets ours through.
    assert alice.post_form("/accounts/signup/", account, origin="https://evil.example") == 403
    assert alice.post_form("/accounts/signup/", account) == 302
    assert {"csrftoken", "sessionid"} <= alice.secure_cookies

    # Someone else fails to sign in until refused...
    mallory = Visitor(cluster, "127.0.0.2")
    wrong = {"username": "mallory", "password": "wrong"}
    assert [mallory.post_form("/accounts/login/", wrong) for _ in range(5)] == [200] * 5
    assert mallory.post_form("/accounts/login/", wrong) == 429
    # ...which is no reason to refuse alice: daphne (--proxy-headers) knows they are two.
    alice.cookies.clear()
    assert alice.post_form("/accounts/login/", {"username": "alice", "password": password}) == 302
