"""The benchmark in one command: project vs the tutorial vs a bare-ASGI ceiling.

    python bench/run.py            # every scenario: tutorial, project, ceiling, project on 2
    python bench/run.py --quick    # the two blasts, project and ceiling only (~20 s)
    python bench/run.py --full     # also the tutorial on RedisChannelLayer, which loses

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
from collections.abc import Iterator, Sequence
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
# More than this many cores busy before we start means someone else is using the machine.
BUSY_WARNING_CORES = 0.2

# --- what can be run ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A server to measure: an ASGI application under daphne, in one or more processes."""

    name: str
    app: str
    django: bool
    processes: int = 1
    settings: str = "mysite.settings"
    # The tutorial on RedisChannelLayer drops messages by design: shown, never a failure.
    loses_by_design: bool = False


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
# Not a load-client scenario: bench/fairness.py, on the project only, reported after the table.
FAIRNESS = "fairness"
DEFAULT_SCENARIOS = [*PRESETS, FAIRNESS]
DEFAULT_TARGETS = ["tutorial", "project", "ceiling", "project-2p"]
QUICK_SCENARIOS = ["blast-1x100", "blast-10x10"]
QUICK_TARGETS = ["project", "ceiling"]
FULL_TARGETS = ["tutorial", "tutorial-rcl", "project", "ceiling", "project-2p"]

# The project's targets (docs/benchmarks.md): blast ≥ 0.8× the ceiling's deliveries/s, paced
# p99 ≤ 1.5× the ceiling's, idle ≤ 32 KB (32,000 bytes) per connection, two processes ≥ 0.8×
# one; with nothing lost, duplicated or out of order anywhere.
MIN_BLAST_RATIO = 0.8
MAX_PACED_P99_RATIO = 1.5
MAX_IDLE_BYTES_PER_CONNECTION = 32_000
MIN_TWO_PROCESS_RATIO = 0.8
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


def layer_backends(env: dict[str, str], modules: Sequence[str]) -> dict[str, str]:
    """The channel-layer backend each settings module configures, as Django reads it."""
    code = "from django.conf import settings; print(settings.CHANNEL_LAYERS['default']['BACKEND'])"
    backends = {}
    for module in modules:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": module},
            capture_output=True,
            text=True,
        )
        lines = (done.stdout or done.stderr).strip().splitlines()
        backends[module] = lines[-1] if lines else f"exit {done.returncode}"
    return backends


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


# --- running ------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    scenario: Scenario
    target: str
    result: ScenarioResult | None = None  # the median run by deliveries/s
    runs: list[ScenarioResult] = field(default_factory=list)  # every repeat, median included
    kib_per_connection: float | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Lost deliveries over every repeat: one bad run is never hidden by the median."""
        return sum(r.lost for r in self.runs)

    @property
    def dupes(self) -> int:
        """Duplicate deliveries over every repeat."""
        return sum(r.dupes for r in self.runs)

    @property
    def order_errors(self) -> int:
        """Order errors over every repeat."""
        return sum(r.order_errors for r in self.runs)

    @property
    def failed(self) -> bool:
        """Lost or misordered deliveries, refused connections, or no result at all."""
        if TARGETS[self.target].loses_by_design:
            return self.result is None
        refused = sum(r.connect_failures for r in self.runs)
        return self.result is None or bool(self.lost or self.dupes or self.order_errors or refused)


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
            argv = [sys.executable, "-m", "daphne", "-b", HOST, "-p", str(port), target.app]
            target_env = {**env, "DJANGO_SETTINGS_MODULE": target.settings}
            processes.append(stack.enter_context(started(argv, port, log, target_env, target.app)))
            ports.append(port)
        yield Daphnes(processes, ports)


def warm_up(servers: Daphnes) -> None:
    """One small exchange first: imports, URL resolvers and Redis connections are lazy.

    It also proves the target answers (Origin accepted, route matched) before it is measured.
    """
    check = Scenario("blast", rooms=1, clients=2 * len(servers.ports), messages=10)
    result = run_scenario(check, servers.urls, None, quiet_s=5.0)
    if result.connect_failures or result.lost:
        detail = result.connect_error or f"lost {result.lost} of {result.expected}"
        raise RuntimeError(f"warm-up failed: {detail}")


@dataclass(frozen=True)
class Options:
    """Command-line choices that apply to every run."""

    client_processes: int
    quiet_s: float
    repeat: int  # runs of each blast scenario; the table shows the median


def run_one(scenario: Scenario, target: Target, servers: Daphnes, options: Options) -> Row:
    """Measure one scenario against running servers."""
    row = Row(scenario, target.name)
    pid = servers.processes[0].pid
    rss: dict[str, int] = {}
    if scenario.kind == "idle":
        rss["before"] = rss_kib(pid)

    def on_connected() -> None:
        if scenario.kind == "idle":
            rss["after"] = rss_kib(pid)

    result = run_scenario(
        scenario,
        servers.urls,
        None,
        processes=options.client_processes,
        quiet_s=options.quiet_s,
        on_connected=on_connected,
        cpu_probe=servers.cpu,
    )
    row.result, row.runs = result, [result]
    if scenario.kind == "idle" and result.connections:
        row.kib_per_connection = (rss["after"] - rss["before"]) / result.connections
        row.notes.append(
            f"daphne VmRSS {rss['before']:,} KiB before, {rss['after']:,} KiB with "
            f"{result.connections:,} connections open"
        )
    return row


def run_repeated(scenario: Scenario, target: Target, servers: Daphnes, options: Options) -> Row:
    """Blast runs last a fraction of a second, so they are repeated and the median is shown."""
    if scenario.kind != "blast" or options.repeat <= 1:
        return run_one(scenario, target, servers, options)
    rows = [run_one(scenario, target, servers, options) for _ in range(options.repeat)]
    runs = [row.result for row in rows if row.result is not None]
    runs.sort(key=lambda r: r.deliveries_per_s)
    rates = ", ".join(f"{r.deliveries_per_s:,.0f}" for r in runs)
    row = Row(scenario, target.name, result=runs[len(runs) // 2], runs=runs)
    row.notes.append(f"deliveries/s of the {len(runs)} runs: {rates}")
    return row


def log_tail(workdir: Path, prefix: str, lines: int = 15) -> str:
    """The last lines of a target's daphne logs, to explain a failure."""
    out = []
    for path in sorted(workdir.glob(f"{prefix}-*.log")):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)


def measure_target(
    target: Target,
    scenarios: Sequence[Scenario],
    env: dict[str, str],
    workdir: Path,
    options: Options,
) -> list[Row]:
    """Every scenario on one target: one server for the traffic runs, a fresh one per idle run
    (memory per connection is only meaningful from a server that has not been loaded yet)."""
    rows: list[Row] = []
    batches: list[list[Scenario]] = []
    traffic = [s for s in scenarios if s.kind != "idle"]
    if traffic:
        batches.append(traffic)
    batches += [[s] for s in scenarios if s.kind == "idle"]
    for batch in batches:
        pending = list(batch)
        try:
            with daphnes(target, env, workdir) as servers:
                warm_up(servers)
                while pending:
                    scenario = pending[0]
                    progress(f"{target.name}: {scenario.name} …")
                    try:
                        row = run_repeated(scenario, target, servers, options)
                    except WorkerFailed as error:
                        row = Row(scenario, target.name, error=str(error))
                    pending.pop(0)
                    rows.append(row)
                    progress(f"{target.name}: {scenario.name}: {summary(row)}")
        except (RuntimeError, OSError, WorkerFailed) as error:
            detail = f"{error}\n{log_tail(workdir, target.name)}"
            progress(f"{target.name}: FAILED: {detail}")
            rows += [Row(s, target.name, error=str(error)) for s in pending]
    return rows


def summary(row: Row) -> str:
    """A progress line for one finished row."""
    r = row.result
    if r is None:
        return f"error: {row.error}"
    return (
        f"{r.deliveries_per_s:,.0f} deliveries/s (median of {len(row.runs)}), lost {row.lost}, "
        f"dupes {row.dupes}, order errors {row.order_errors}"
    )


def progress(line: str) -> None:
    """Progress goes to stderr; the table alone goes to stdout."""
    print(line, file=sys.stderr, flush=True)


# --- the report ---------------------------------------------------------------------------


def machine_header(redis_url: str | None, options: Options) -> str:
    """Cores, CPU, memory, Python and package versions: what the figures depend on."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 2**20:.1f} GiB"
    versions = []
    for package in (
        "Django",
        "channels",
        "channels-redis",
        "daphne",
        "Twisted",
        "autobahn",
        "redis",
        "websockets",
    ):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    redis_version = "?"
    binary = shutil.which("redis-server")
    if binary:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        if m := re.search(r"v=(\S+)", out):
            redis_version = m.group(1)
    return "\n".join(
        [
            f"machine: {os.cpu_count()} cores ({cpu}), {memory}, "
            f"{platform.system()} {platform.release()}",
            f"python: {platform.python_version()} ({sys.executable})",
            f"packages: {', '.join(versions)}",
            f"redis: redis-server {redis_version}, "
            + (f"BENCH_REDIS_URL={redis_url}" if redis_url else "started on a free port"),
            f"load client: {options.client_processes} process(es), the sender is one of each "
            f"room's clients; blast rows are the median of {options.repeat} runs",
        ]
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def vs_ceiling(row: Row, ceiling: Row | None) -> str:
    """Blast: throughput as a fraction of the ceiling's. Paced: p99 as a multiple of the
    ceiling's. Idle: memory per connection as a multiple of the ceiling's."""
    if ceiling is None or row is ceiling or row.result is None or ceiling.result is None:
        return "-"
    r, c = row.result, ceiling.result
    if row.scenario.kind == "blast" and c.deliveries_per_s:
        return f"{r.deliveries_per_s / c.deliveries_per_s:.2f}× rate"
    if row.scenario.kind == "paced" and r.p99_ms and c.p99_ms:
        return f"{r.p99_ms / c.p99_ms:.1f}× p99"
    if row.scenario.kind == "idle" and row.kib_per_connection and ceiling.kib_per_connection:
        return f"{row.kib_per_connection / ceiling.kib_per_connection:.1f}× mem"
    return "-"


HEADINGS = [
    "scenario",
    "target",
    "deliveries/s",
    "p50 ms",
    "p99 ms",
    "lost",
    "dupes",
    "order err",
    "vs ceiling",
    "KiB/conn",
    "client cpu",
    "server cpu",
]


def table(rows: Sequence[Row]) -> str:
    """The results as one Markdown table, ready to paste into docs/benchmarks.md."""
    ceilings = {row.scenario: row for row in rows if row.target == "ceiling"}
    lines = []
    for row in rows:
        r = row.result
        if r is None:
            cells = [row.scenario.name, row.target, "error", *["-"] * (len(HEADINGS) - 3)]
        else:
            cells = [
                row.scenario.name,
                row.target,
                f"{r.deliveries_per_s:,.0f}",
                _ms(r.p50_ms),
                _ms(r.p99_ms),
                str(row.lost),
                str(row.dupes),
                str(row.order_errors),
                vs_ceiling(row, ceilings.get(row.scenario)),
                "-" if row.kib_per_connection is None else f"{row.kib_per_connection:.1f}",
                f"{r.client_cpu:.0%}",
                "-" if r.server_cpu is None else f"{r.server_cpu:.0%}",
            ]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(HEADINGS)]
    numeric = set(range(2, len(HEADINGS)))

    def render(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + (":" if i in numeric else "-") for i, w in enumerate(widths)]
    return "\n".join([render(HEADINGS), render(rule), *map(render, lines)])


def notes(rows: Sequence[Row]) -> list[str]:
    """Anything a row's numbers do not say: errors, refused connections, closed sockets."""
    out = []
    for row in rows:
        label = f"{row.scenario.name} / {row.target}"
        r = row.result
        if r is None:
            out.append(f"{label}: {row.error.splitlines()[0] if row.error else 'no result'}")
            continue
        out += [f"{label}: {note}" for note in row.notes]
        refused = sum(run.connect_failures for run in row.runs)
        if refused:
            why = next(run.connect_error for run in row.runs if run.connect_error)
            out.append(f"{label}: {refused} connections refused ({why})")
        closed = sum(run.closed_early for run in row.runs)
        if closed:
            out.append(f"{label}: the server closed {closed} sockets during the run")
        errors = sum(run.error_frames for run in row.runs)
        if errors:
            out.append(f"{label}: {errors} error frames received")
        for run in row.runs:
            planned = run.scenario.messages * run.scenario.rooms
            if run.sent != planned:
                out.append(f"{label}: a run sent {run.sent} of {planned} messages")
    return out


def target_checks(rows: Sequence[Row]) -> list[tuple[str, bool]]:
    """Each target of the project that these rows can judge: what it says, and whether met."""
    found = {(row.scenario.name, row.target): row for row in rows if row.result is not None}
    checks = []
    for (name, target), row in found.items():
        if target != "project":
            continue
        r = row.result
        assert r is not None
        clean = not row.failed
        ceiling = found.get((name, "ceiling"))
        c = ceiling.result if ceiling is not None else None
        kind = row.scenario.kind
        if kind == "blast" and c is not None:
            ratio = r.deliveries_per_s / c.deliveries_per_s
            checks.append(
                (
                    f"{name}: {ratio:.2f}× the ceiling's deliveries/s (≥ {MIN_BLAST_RATIO}), "
                    f"{row.lost} lost",
                    clean and ratio >= MIN_BLAST_RATIO,
                )
            )
        if kind == "paced" and c is not None and r.p99_ms and c.p99_ms:
            ratio = r.p99_ms / c.p99_ms
            checks.append(
                (
                    f"{name}: p99 {r.p99_ms:.1f} ms = {ratio:.2f}× the ceiling's "
                    f"(≤ {MAX_PACED_P99_RATIO}), {row.lost} lost",
                    clean and ratio <= MAX_PACED_P99_RATIO,
                )
            )
        if kind == "idle" and row.kib_per_connection is not None:
            per_connection = row.kib_per_connection * 1024
            checks.append(
                (
                    f"{name}: {per_connection / 1000:.1f} KB per connection "
                    f"(≤ {MAX_IDLE_BYTES_PER_CONNECTION / 1000:.0f} KB)",
                    clean and per_connection <= MAX_IDLE_BYTES_PER_CONNECTION,
                )
            )
        two = found.get((name, "project-2p"))
        if kind == "blast" and two is not None and two.result is not None:
            ratio = two.result.deliveries_per_s / r.deliveries_per_s
            checks.append(
                (
                    f"{name}: two processes {ratio:.2f}× one (≥ {MIN_TWO_PROCESS_RATIO}), "
                    f"{two.lost} lost",
                    not two.failed and ratio >= MIN_TWO_PROCESS_RATIO,
                )
            )
    return checks


# --- the command --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark the chat against the tutorial and a bare ASGI ceiling.",
        epilog=f"scenario presets: {', '.join(f'{k} = {v}' for k, v in PRESETS.items())}; "
        f"{FAIRNESS} = bench/fairness.py on the project (fair catch-up)",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="also the tutorial on RedisChannelLayer (tutorial-rcl), which loses messages",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the two blast scenarios, on the project and the ceiling",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="SPEC",
        help=f"a preset, {FAIRNESS}, or blast:RxCxM, paced:RxC:RATExSECONDS, idle:N (repeatable)",
    )
    parser.add_argument(
        "--target",
        action="append",
        choices=list(TARGETS),
        help="repeatable; default: tutorial, project, ceiling, project-2p",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=2,
        metavar="P",
        help="load-client processes (default 2; docs/benchmarks.md says why)",
    )
    parser.add_argument(
        "--quiet", type=float, default=5.0, help="seconds without a delivery before giving up"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="N",
        help="runs of each blast scenario (default 3); the table shows the median",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> tuple[list[tuple[Target, list[Scenario]]], bool]:
    """Which scenarios run on which targets, in order; and whether the fair catch-up runs
    (named with --scenario, or by default when the project is a target)."""
    default_scenarios = QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS
    default_targets = FULL_TARGETS if args.full else DEFAULT_TARGETS
    if args.quick:
        default_targets = QUICK_TARGETS
    specs = args.scenario or default_scenarios
    scenarios = [parse_scenario(s) for s in specs if s != FAIRNESS]
    names = args.target or default_targets
    fair = FAIRNESS in specs and (args.scenario is not None or "project" in names)
    work = []
    for name in names:
        target = TARGETS[name]
        chosen = scenarios
        if target.processes > 1:
            chosen = [s for s in scenarios if s.kind in MULTI_PROCESS_KINDS]
        if chosen:
            work.append((target, chosen))
    return work, fair


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that every `finally` stops what it started."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios on the chosen targets and print the table."""
    args = parse_args(argv)
    terminate_on_sigterm()
    raise_fd_limit()
    try:
        work, fair = plan(args)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    options = Options(
        client_processes=args.client_processes, quiet_s=args.quiet, repeat=max(1, args.repeat)
    )
    given_redis = os.environ.get("BENCH_REDIS_URL")
    busy_before = busy_cores()
    started_at = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    rows: list[Row] = []
    backends: dict[str, str] = {}
    # Imported here: bench/fairness.py uses this module's helpers.
    from bench import fairness

    fair_result: fairness.FairnessResult | None = None
    try:
        with contextlib.ExitStack() as stack:
            django = fair or any(target.django for target, _ in work)
            redis_url = given_redis or (stack.enter_context(own_redis(workdir)) if django else "")
            env = server_env(redis_url, f"sqlite:///{workdir / 'bench.sqlite3'}")
            migrated = not django or migrate(env, workdir / "migrate.log")
            modules = dict.fromkeys(target.settings for target, _ in work if target.django)
            backends = layer_backends(env, list(modules))
            for target, scenarios in work:
                if target.django and not migrated:
                    rows += [Row(s, target.name, error="migrate failed") for s in scenarios]
                else:
                    rows += measure_target(target, scenarios, env, workdir, options)
            if fair:
                progress("project: fair catch-up …")
                fair_result = (
                    fairness.run_on_project(env, workdir)
                    if migrated
                    else fairness.FairnessResult(error="migrate failed")
                )
    finally:
        if args.keep:
            progress(f"logs and database kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(machine_header(given_redis, options))
    for module, backend in backends.items():
        users = ", ".join(t.name for t, _ in work if t.django and t.settings == module)
        print(f"channel layer: {backend} ({module}: {users})")
    print(
        f"other load: {busy_before:.2f} of {os.cpu_count()} cores busy in the second before "
        f"the run; took {time.monotonic() - started_at:.0f}s"
    )
    if busy_before > BUSY_WARNING_CORES:
        print("WARNING: the machine was busy before the run; these figures understate it")
    if rows:
        print()
        print(table(rows))
    for note in notes(rows):
        print(f"- {note}")
    checks = target_checks(rows)
    if fair_result is not None:
        print()
        print("\n".join(fairness.report(fair_result)))
        checks.append(fairness.check(fair_result))
    if checks:
        print("\ntargets:")
        for text, met in checks:
            print(f"  {'met    ' if met else 'NOT MET'}  {text}")
    failed = [row for row in rows if row.failed]
    if failed:
        print(f"\nFAILED: {len(failed)} run(s) lost messages, broke the order or did not run")
        return 1
    if not all(met for _, met in checks):
        print("\nFAILED: a target is not met")
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # Every `finally` has already stopped what it started.
        print("interrupted", file=sys.stderr)
        sys.exit(130)
