"""The benchmark in one command: project vs the tutorial vs a bare-ASGI ceiling.

    python bench/run.py            # the default scenarios on every target (under 2 minutes)
    python bench/run.py --full     # every scenario, and the project on two processes

It starts its own redis-server on a free port (unless BENCH_REDIS_URL is set), migrates a
fresh SQLite database in a temporary directory, runs each target under daphne on a free
127.0.0.1 port, drives it with bench/loadclient.py, stops everything it started, and prints
one table. It exits non-zero if any run lost a message, broke the order, or failed.
docs/benchmarks.md explains the columns and the method.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
# `python bench/run.py` puts bench/ on sys.path, not the project root that holds `bench` and
# `mysite`; the spawned client processes inherit this path too.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.loadclient import (  # noqa: E402
    Scenario,
    ScenarioResult,
    WorkerFailed,
    raise_fd_limit,
    run_scenario,
)

HOST = "127.0.0.1"
ORIGIN_HOSTS = "127.0.0.1,localhost"
START_TIMEOUT_S = 60.0

# --- what can be run ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A server to measure: an ASGI application under daphne, in one or more processes."""

    name: str
    app: str
    django: bool
    processes: int = 1


TARGETS = {
    "tutorial": Target("tutorial", "bench.tutorial_asgi:application", django=True),
    "project": Target("project", "mysite.asgi:application", django=True),
    "ceiling": Target("ceiling", "bench.bare_asgi:application", django=False),
    # The project twice on one Redis, clients dealt alternately to the two processes.
    "project-2p": Target("project-2p", "mysite.asgi:application", django=True, processes=2),
}

PRESETS = {
    "blast-1x100": "blast:1x100x100",
    "blast-10x10": "blast:10x10x100",
    "paced-1000": "paced:1x1000:2x20",
    "idle-5000": "idle:5000",
}
DEFAULT_SCENARIOS = ["blast-1x100", "blast-10x10"]
DEFAULT_TARGETS = ["tutorial", "project", "ceiling"]
FULL_SCENARIOS = list(PRESETS)
# Idle holds 100 connections per room (and sends one check message per room).
IDLE_ROOM_SIZE = 100
# Single-process memory is the question for idle; two processes answer a throughput question.
MULTI_PROCESS_KINDS = {"blast", "paced"}


def parse_scenario(spec: str) -> Scenario:
    """`blast:ROOMSxCLIENTSxMESSAGES`, `paced:ROOMSxCLIENTS:RATExSECONDS`, `idle:CONNECTIONS`,
    or a preset name."""
    spec = PRESETS.get(spec, spec)
    if m := re.fullmatch(r"blast:(\d+)x(\d+)x(\d+)", spec):
        rooms, clients, messages = map(int, m.groups())
        return Scenario("blast", rooms, clients, messages)
    if m := re.fullmatch(r"paced:(\d+)x(\d+):([\d.]+)x([\d.]+)", spec):
        rate, seconds = float(m.group(3)), float(m.group(4))
        messages = round(rate * seconds)
        return Scenario("paced", int(m.group(1)), int(m.group(2)), messages, rate=rate)
    if m := re.fullmatch(r"idle:(\d+)", spec):
        connections = int(m.group(1))
        room_size = min(IDLE_ROOM_SIZE, connections)
        if connections % room_size:
            raise ValueError(f"idle connections must be a multiple of {room_size}")
        return Scenario("idle", connections // room_size, room_size, 1)
    raise ValueError(f"not a scenario: {spec!r} (presets: {', '.join(PRESETS)})")


# --- processes we start -------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    """Poll until `port` accepts a connection; fail early if `process` exits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            return
        time.sleep(0.05)  # a poll interval: nothing signals "listening" but the port itself
    raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT_S:g}s")


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
        wait_for_port(port, process, what)
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


def redis_ping(port: int) -> bool:
    """True once a Redis on `port` answers PING."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def own_redis(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port, without persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found: run scripts/system-deps or set BENCH_REDIS_URL")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(workdir)]
    with (
        open(workdir / "redis.log", "wb") as log,
        started(argv, port, log, dict(os.environ), "redis-server"),
    ):
        deadline = time.monotonic() + START_TIMEOUT_S
        while not redis_ping(port):  # the port opens a moment before Redis answers
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)
        yield f"redis://{HOST}:{port}/0"


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
    )
    return env


def migrate(env: dict[str, str], log: IO[bytes]) -> None:
    """Create the fresh database's tables."""
    argv = [sys.executable, "manage.py", "migrate", "--noinput"]
    subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


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


# --- running ------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    scenario: Scenario
    target: str
    result: ScenarioResult | None = None
    kib_per_connection: float | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Lost or misordered deliveries, or no result at all."""
        r = self.result
        return r is None or bool(r.lost or r.order_errors or r.connect_failures)


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
    with contextlib.ExitStack) as stack:
        processes, ports = [], []
        for i in range(target.processes):
            port = free_port()
            log = stack.enter_context(open(workdir / f"{target.name}-{i}-{port}.log", "ab"))
            argv = [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(port), target.app]
            processes.append(stack.enter_context(started(argv, port, log, env, target.app)))
            ports.append(port)
        yield Daphnes(processes, ports)
