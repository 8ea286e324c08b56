"""The chat under a real daphne in a child process, which tests may kill and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from chat.testing.redis_server import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
# The listen queue daphne asks the kernel for, as deploy/chat@.service does. Twisted's default
# is 50: when every client of a restarted process comes back at once, the kernel drops the
# SYNs past it and each such client waits 1 s, then 3 s, 7 s ... to try again
# (docs/deployment.md). The kernel caps it at net.core.somaxconn (4096 on current kernels).
LISTEN_BACKLOG = 4096


def listen_args(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> list[str]:
    """daphne's options to listen on host:port with `backlog` (its -b/-p cannot set one)."""
    return ["-e", f"tcp:port={port}:interface={host}:backlog={backlog}"]


@dataclass
class DaphneServer:
    """`daphne mysite.asgi:application` on 127.0.0.1, on its own SQLite file and a given Redis."""

    redis_url: str
    port: int = field(default_factory=free_port)
    database: Path = field(
        default_factory=lambda: Path(tempfile.mkdtemp(prefix="chat-server-")) / "chat.sqlite3"
    )
    process: subprocess.Popen[bytes] | None = None
    # More environment for the server (CHAT_LIMITS=off, say), over the defaults below.
    extra_env: dict[str, str] = field(default_factory=dict)
    # Where the server's stdout and stderr go (appended, across restarts); None: nowhere.
    log_path: Path | None = None
    # More daphne options (["--proxy-headers"] behind nginx, say).
    daphne_args: list[str] = field(default_factory=list)
    # The listen queue (bench/storm.py --backlog 50 shows Twisted's default).
    backlog: int = LISTEN_BACKLOG

    @property
    def env(self) -> dict[str, str]:
        """The environment an operator would set for this server."""
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "mysite.settings",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "test-only-secret-key",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": f"sqlite:///{self.database}",
            "REDIS_URL": self.redis_url,
            # Limits off, as in the benchmarks: fault tests reconnect and post in bursts from
            # one address. Tests of the limits turn them on through extra_env.
            "CHAT_LIMITS": "off",
            **self.extra_env,
        }

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def migrate(self) -> DaphneServer:
        """Create the server's database."""
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        return self

    def start(self) -> DaphneServer:
        """Start daphne (again) on the same port and database, and wait until it listens."""
        log = self.log_path.open("ab") if self.log_path is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                *listen_args("127.0.0.1", self.port, self.backlog),
                *self.daphne_args,
                "mysite.asgi:application",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT if self.log_path is not None else subprocess.DEVNULL,
        )
        if not isinstance(log, int):
            log.close()  # the child has its own copy
        wait_for_port(self.port, timeout=20)
        return self

    def log_lines(self) -> list[str]:
        """Every line the server wrote to log_path so far."""
        assert self.log_path is not None, "started without a log_path"
        return self.log_path.read_text(errors="replace").splitlines()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL): no goodbye to any socket."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop the server politely."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def rss(self) -> int:
        """The daphne process's resident memory now, in bytes (VmRSS in /proc, Linux)."""
        assert self.process is not None, "the server is not running"
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                kilobytes = int(line.split()[1])
                return kilobytes * 1024
        raise RuntimeError(f"no VmRSS for process {self.process.pid}")

    def stored(self, room: str) -> list[tuple[int, str]]:
        """(seq, text) of every message the server stored in a room, in order."""
        import sqlite3

        with sqlite3.connect(self.database) as db:
            return db.execute(
                "SELECT m.seq, m.body FROM chat_message m JOIN chat_room r ON r.id = m.room_id"
                " WHERE r.name = ? ORDER BY m.seq",
                (room,),
            ).fetchall()
