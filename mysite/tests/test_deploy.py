"""What deploy/ and docs/deployment.md rely on: hashed, compressed static files served by a real
daphne after collectstatic; the 500 page; the unit's command line and the environment file."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from daphne.cli import CommandLineInterface
from django.test import RequestFactory
from django.views.defaults import server_error
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint, serverFromString

from chat.testing.server import LISTEN_BACKLOG, ROOT, DaphneServer
from conftest import redis_url_or_skip

DEPLOY = ROOT / "deploy"


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, dict(response.headers), response.read()


@pytest.mark.redis
def test_collected_static_files_are_hashed_compressed_and_cached_for_good(tmp_path: Path) -> None:
    static_root = tmp_path / "static"
    server = DaphneServer(
        redis_url=redis_url_or_skip(), extra_env={"DJANGO_STATIC_ROOT": str(static_root)}
    )
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=server.env,
        check=True,
    )
    assert (static_root / "staticfiles.json").exists()
    server.migrate().start()
    try:
        _, _, page = fetch(f"{server.http_url}/chat/")
        (css,) = re.findall(r'href="(/static/chat/chat\.[0-9a-f]{12}\.css)"', page.decode())
        assert (static_root / css.removeprefix("/static/")).with_suffix(".css.gz").exists()
        status, headers, body = fetch(f"{server.http_url}{css}", {"Accept-Encoding": "gzip"})
        assert status == 200
        assert headers["Content-Encoding"] == "gzip"
        assert "immutable" in headers["Cache-Control"]
        assert "max-age=315360000" in headers["Cache-Control"]
        assert body[:2] == b"\x1f\x8b"
    finally:
        server.stop()


def test_without_collectstatic_pages_link_plain_names() -> None:
    from django.templatetags.static import static

    # No manifest in this checkout's STATIC_ROOT (tests never collect into it).
    assert static("chat/chat.css") == "/static/chat/chat.css"


def test_the_500_page_needs_no_request_context() -> None:
    response = server_error(RequestFactory().get("/chat/"))
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page
    assert 'href="/static/chat/chat.css"' in page


def test_the_unit_runs_daphne_with_arguments_it_accepts() -> None:
    unit = (DEPLOY / "chat@.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    argv = shlex.split(exec_start.replace("%i", "8001"))
    assert argv[0].endswith("/.venv/bin/daphne")
    args = CommandLineInterface().parser.parse_args(argv[1:])
    assert args.proxy_headers
    # -e instead of -b/-p, for a listen queue longer than Twisted's 50 (docs/deployment.md).
    (listen,) = args.socket_strings
    endpoint = serverFromString(reactor, listen)
    assert isinstance(endpoint, TCP4ServerEndpoint)
    assert (endpoint._interface, endpoint._port) == ("127.0.0.1", 8001)
    assert endpoint._backlog == LISTEN_BACKLOG == 4096
    assert args.application == "mysite.asgi:application"
    assert args.websocket_max_message_size == 65536
    # The drain (chat/lifecycle.py) fits in the time systemd gives before SIGKILL.
    from chat import lifecycle

    stop_timeout = int(re.findall(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE)[0])
    assert stop_timeout > lifecycle.SETTLE_TIMEOUT + lifecycle.CLOSE_TIMEOUT


def test_the_environment_file_names_only_variables_the_chat_reads() -> None:
    names = re.findall(r"^([A-Z_]+)=", (DEPLOY / "chat.env.example").read_text(), re.MULTILINE)
    sources = (ROOT / "mysite" / "settings.py").read_text()
    assert names
    for name in names:
        assert f'"{name}"' in sources, f"{name} is not read by mysite/settings.py"
