"""A PostgreSQL to test against: the one at TEST_POSTGRES_URL, or a private cluster started
for this test run (its own data directory, its own port, gone at exit).

Debian's `postgresql` package (which `make test` installs when missing) puts `initdb` and
`pg_ctl` in /usr/lib/postgresql/VERSION/bin. PostgreSQL refuses to run as root, so as root the
cluster runs as the package's `postgres` user. Durability is left as configured by default
(fsync on): the tests that run here are about what survives.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field

from chat.testing.redis_server import free_port

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/chat"


class PostgresUnavailable(RuntimeError):
    """Nothing listens at TEST_POSTGRES_URL and PostgreSQL is not installed to start one."""


def reachable(url: str) -> bool:
    """True if the server of `url` answers (its `postgres` database, which always exists)."""
    try:
        import psycopg

        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", connect_timeout=2):
            return True
    except Exception:
        return False


def _bin_dir() -> str:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0,
    )
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise PostgresUnavailable("PostgreSQL is not installed (make test installs it)")
    return os.path.dirname(initdb)


@dataclass
class PostgresCluster:
    """A cluster this code made and started; `stop` stops it and removes its files."""

    port: int = field(default_factory=free_port)
    directory: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="chat-postgres-"))

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/chat"

    def _run(self, *command: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            prefix = ["runuser", "-u", "postgres", "--"]
        result = subprocess.run(
            [*prefix, *command], capture_output=True, text=True, check=False, timeout=120
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{command[0]} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
            )

    def start(self) -> PostgresCluster:
        bin_dir = _bin_dir()
        data = os.path.join(self.directory, "data")
        if os.geteuid() == 0:
            shutil.chown(self.directory, user="postgres", group="postgres")
        self._run(
            f"{bin_dir}/initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c max_connections=200"
        )
        self._run(
            f"{bin_dir}/pg_ctl",
            "-D",
            data,
            "-o",
            options,
            "-l",
            os.path.join(self.directory, "log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self) -> None:
        data = os.path.join(self.directory, "data")
        with contextlib.suppress(PostgresUnavailable):
            self._run(f"{_bin_dir()}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


_private: PostgresCluster | None = None


def postgres_url() -> str:
    """TEST_POSTGRES_URL (or the standard local one) if it answers, else a private cluster's.

    Raises PostgresUnavailable when neither can be had.
    """
    global _private
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_URL)
    if reachable(url):
        return url
    if _private is None:
        _private = PostgresCluster().start()
        atexit.register(_private.stop)
    return _private.url
