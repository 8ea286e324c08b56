"""The processes a benchmark starts (daphne, redis-server, migrate) and what /proc says of them."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from chat.testing.redis_server import RedisServer, RedisUnavailable, free_port, wait_for_port
from chat.testing.server import listen_args

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ORIGIN_HOSTS = "127.0.0.1,localhost"
START_TIMEOUT_S = 60.0
# How long one wait for the port lasts before we look again whether the server has exited.
EXIT_CHECK_S = 1.0


@dataclass(frozen=True)
class Target:
    """A server to measure: an ASGI application under daphne (or a server of its own, `argv`),
    in one or more processes."""

    name: str
    app: str
    django: bool
    processes: int = 1
    settings: str = "mysite.settings"
    # The tutorial on RedisChannelLayer drops messages by design: shown, never a failure.
    loses_by_design: bool = False
    # Where its messages are stored: a fresh SQLite file, or a fresh PostgreSQL database.
    database: str = "sqlite"
    # A server that is not daphne: its own arguments to the Python interpreter, `{port}` filled.
    argv: tuple[str, ...] = ()

    def command(self, port: int) -> list[str]:
        """The command line of one of its processes, listening on `port`."""
        if self.argv:
            return [sys.executable, *(arg.replace("{port}", str(port)) for arg in self.argv)]
        # Listening as deployed: the backlog of deploy/chat@.service (chat/testing/server.py).
        return [sys.executable, "-m", "daphne", *listen_args(HOST, port), self.app]


TARGETS = {
    # The tutorial's consumer on the project's settings, so on the project's channel layer.
    "tutorial": Target("tutorial", "bench.tutorial_asgi:application", django=True),
    # The same, on the layer the tutorial itself configures (RedisChannelLayer).
    "tutorial-rcl": Target(
        "tutorial-rcl",
        "bench.tutorial_asgi:application",
        django=True,
        settings="bench.tutorial_settings",
        loses_by_design=True,
    ),
    "project": Target("project", "mysite.asgi:application", django=True),
    # The project on PostgreSQL, as a cluster of processes would run it.
    "project-pg": Target("project-pg", "mysite.asgi:application", django=True, database="postgres"),
    "ceiling": Target("ceiling", "bench.bare_asgi:application", django=False),
    # The limit: a room broadcaster in C (picows on uvloop), no ASGI; what a delivery costs at
    # the least.
    "limit": Target(
        "limit",
        "bench.picows_broadcaster",
        django=False,
        argv=("-m", "bench.picows_broadcaster", "--host", HOST, "--port", "{port}"),
    ),
    # The project twice on one Redis, clients dealt alternately to the two processes.
    "project-2p": Target("project-2p", "mysite.asgi:application", django=True, processes=2),
}


def progress(line: str) -> None:
    """Progress goes to stderr; the report alone goes to stdout."""
    print(line, file=sys.stderr, flush=True)


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that every `finally` stops what it started."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# --- starting and stopping ----------------------------------------------------------------


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    """Wait until `port` accepts a connection; fail early if `process` exits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None:
        try:
            wait_for_port(port, timeout=EXIT_CHECK_S, host=HOST)
        except TimeoutError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} did not listen on port {port} within {START_TIMEOUT_S:g}s"
                ) from None
        else:
            return
    raise RuntimeError(f"{what} exited with code {process.returncode} before listening")


def _server_preexec() -> None:
    """In the child before exec: as many file descriptors as allowed (idle holds thousands)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def started(
    argv: Sequence[str], port: int, log: IO[bytes], env: dict[str, str], what: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process until the block ends; always stop it, even on Ctrl-C."""
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_server_preexec,
        # Own session: Ctrl-C reaches only us, and we stop the servers in order.
        start_new_session=True,
    )
    try:
        wait_listening(port, process, what)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not exited in 10 seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one benchmark run, dropped at the end.

    On the server of BENCH_DATABASE_URL if set, else TEST_POSTGRES_URL's (or 127.0.0.1:5432),
    else a private cluster started for the run (chat/testing/postgres_server.py). Its settings
    are the server's own: `synchronous_commit` stays on, so an acknowledged post survives a
    PostgreSQL crash.
    """
    import psycopg

    from chat.testing.postgres_server import PostgresUnavailable, postgres_url

    try:
        base = os.environ.get("BENCH_DATABASE_URL") or postgres_url()
    except PostgresUnavailable as error:
        raise SystemExit(f"PostgreSQL unavailable: {error}") from None
    name = f"chat_bench_{os.getpid()}"
    admin = base.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def own_redis(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port, without persistence; yields its URL."""
    server = RedisServer(directory=str(workdir))
    try:
        server.start()
    except RedisUnavailable:
        raise SystemExit(
            "redis-server not found: run scripts/system-deps or set BENCH_REDIS_URL"
        ) from None
    try:
        yield server.url
    finally:
        server.stop()


def server_env(redis_url: str, database_url: str) -> dict[str, str]:
    """The environment every daphne target runs with."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="mysite.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY="bench-only",
        DJANGO_ALLOWED_HOSTS=ORIGIN_HOSTS,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        # Rate limits and caps off: the load client opens thousands of sockets and posts in
        # bursts from one address, as no single user would.
        CHAT_LIMITS="off",
    )
    return env


def migrate(env: dict[str, str], log_path: Path) -> bool:
    """Create the fresh database's tables; False (and the log on stderr) if that fails."""
    argv = [sys.executable, "manage.py", "migrate", "--noinput"]
    with open(log_path, "wb") as log:
        done = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        progress(f"migrate failed:\n{log_path.read_text(errors='replace')[-3000:]}")
    return done.returncode == 0


@dataclass
class Daphnes:
    """The daphne processes of one target, and how to reach them."""

    processes: list[subprocess.Popen[bytes]]
    ports: list[int]

    @property
    def urls(self) -> list[str]:
        """Base ws:// URLs, one per process."""
        return [f"ws://{HOST}:{port}" for port in self.ports]

    def cpu(self) -> float:
        """CPU seconds used so far by all the processes."""
        return cpu_seconds([p.pid for p in self.processes])


@contextlib.contextmanager
def daphnes(target: Target, env: dict[str, str], workdir: Path) -> Iterator[Daphnes]:
    """Start the target's daphne processes and wait until every one listens."""
    with contextlib.ExitStack() as stack:
        processes, ports = [], []
        for i in range(target.processes):
            port = free_port()
            log = stack.enter_context(open(workdir / f"{target.name}-{i}-{port}.log", "ab"))
            argv = target.command(port)
            target_env = {**env, "DJANGO_SETTINGS_MODULE": target.settings}
            processes.append(stack.enter_context(started(argv, port, log, target_env, target.app)))
            ports.append(port)
        yield Daphnes(processes, ports)


def log_tail(workdir: Path, prefix: str, lines: int = 15) -> str:
    """The last lines of a target's daphne logs, to explain a failure."""
    out = []
    for path in sorted(workdir.glob(f"{prefix}-*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)


# --- reading /proc ------------------------------------------------------------------------


def busy_cores(seconds: float = 1.0) -> float:
    """How many cores the whole machine kept busy over a short sample (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values[:8]) - idle, sum(values[:8])

    busy0, total0 = sample()
    time.sleep(seconds)  # the sampling window itself, not a wait for anything
    busy1, total1 = sample()
    cores = os.cpu_count() or 1
    return cores * (busy1 - busy0) / max(1, total1 - total0)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc/PID/status (VmRSS, in KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used, from /proc/PID/stat."""
    total = 0
    for pid in pids:
        # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS
