"""A throwaway redis-server on a free port, for tests that need a real Redis."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field


class RedisUnavailable(RuntimeError):
    """No Redis to test against: TEST_REDIS_URL is unset and redis-server is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Poll until something accepts connections on the port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.02)


@dataclass
class RedisServer:
    """A redis-server process this code started, and may therefore stop and restart."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    directory: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="chat-redis-"))

    @property
    def url(self) -> str:
        """The redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart) the server on the same port, with nothing kept on disk."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisUnavailable("redis-server is not installed (make test installs it)")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        """Stop the server (frozen or not) and wait for it to exit."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            # A frozen server handles the SIGTERM only once it runs again.
            self.process.send_signal(signal.SIGCONT)
            self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        """Suspend the server (SIGSTOP): connections still open, but nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen server run again (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


_shared: RedisServer | None = None


def shared_redis_url() -> str:
    """TEST_REDIS_URL if set, else one redis-server started for this test process."""
    global _shared
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        return given
    if _shared is None:
        _shared = RedisServer().start()
        atexit.register(_shared.stop)
    return _shared.url
