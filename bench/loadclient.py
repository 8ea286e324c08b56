"""Load client: many WebSocket clients in many rooms, timing and checking every delivery.

Design (docs/benchmarks.md says more):

- A scenario puts N clients in each of M fresh rooms. The sender is one of the N: client 0 of
  each room sends, and, like every browser tab in the room, receives its own messages too. So
  a room's expected deliveries are messages × N.
- Clients are spread round-robin over P worker processes (multiprocessing, spawn), each with
  its own asyncio loop. The parent only coordinates: every worker connects its clients and
  says "ready"; when all are ready the parent says "go"; each worker waits until its clients
  have every expected delivery or nothing has arrived for a quiet timeout, then reports.
- Each message carries `b|<room>|<sender>|<n>|<send monotonic ns>`. CLOCK_MONOTONIC is one
  clock for every process on the machine, so a receiver in another process can subtract.
  Frames are recognised by that payload in their `message` field, whatever else they carry
  (the tutorial sends no `type`); anything else (acks, errors, history) is ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import resource
import secrets
import sys
import time
import traceback
from array import array
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Literal
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Kind = Literal["blast", "paced", "idle"]

# How many handshakes one worker has in flight at once: enough to connect thousands of clients
# in seconds, few enough not to trip the server's listen backlog.
CONNECT_CONCURRENCY = 100


@dataclass(frozen=True)
class Scenario:
    """What to run: M rooms of N clients; one sender per room."""

    kind: Kind
    rooms: int
    clients: int  # per room, the sender included
    messages: int  # per room
    rate: float = 0.0  # paced: messages per second per room
    hold: float = 0.0  # idle (standalone only): seconds to hold the connections before the check

    @property
    def name(self) -> str:
        """Short label for tables, e.g. `blast 1×100×100`."""
        if self.kind == "paced":
            seconds = self.messages / self.rate
            return f"paced {self.rooms}×{self.clients} @{self.rate:g}/s {seconds:g}s"
        if self.kind == "idle":
            return f"idle {self.rooms * self.clients}"
        return f"blast {self.rooms}×{self.clients}×{self.messages}"

    @property
    def send_seconds(self) -> float:
        """How long the senders are expected to take (0 for blast: as fast as they can)."""
        return self.messages / self.rate if self.kind == "paced" else 0.0


@dataclass(frozen=True)
class ClientSpec:
    """One connection to open: its URL, room, and whether it is the room's sender."""

    url: str
    room: str
    sender: bool


@dataclass(frozen=True)
class WorkerPlan:
    """Everything one worker process needs, picklable."""

    scenario: Scenario
    clients: list[ClientSpec]
    origin: str | None  # None: each client sends its own server's origin (page_origin)
    quiet_s: float
    max_wait_s: float
    connect_timeout_s: float


@dataclass
class WorkerResult:
    """What one worker measured; merged by the parent."""

    expected: int = 0
    received: int = 0  # unique bench deliveries
    dupes: int = 0
    order_errors: int = 0
    latencies_ns: array = field(default_factory=lambda: array("q"))
    first_send_ns: int | None = None
    last_recv_ns: int | None = None
    sent: int = 0
    connect_failures: int = 0
    connect_error: str = ""  # the first failure's text, to explain it
    closed_early: int = 0  # sockets the server closed before the end
    error_frames: int = 0  # `{"type": "error"}` frames: the server refused something we sent
    cpu_s: float = 0.0  # this process's CPU time from "go" to the end
    wall_s: float = 0.0


@dataclass
class ScenarioResult:
    """The merged outcome of one scenario against one target."""

    scenario: Scenario
    connections: int
    expected: int
    received: int
    dupes: int
    order_errors: int
    sent: int
    p50_ms: float | None
    p99_ms: float | None
    deliveries_per_s: float
    connect_failures: int
    connect_error: str
    closed_early: int
    error_frames: int
    client_cpu: float  # busiest worker's CPU time ÷ its wall time (1.0 = one core saturated)
    client_cpu_s: float  # CPU seconds of all workers from "go" to the end
    server_cpu: float | None  # server CPU seconds ÷ wall time, when a probe was given
    processes: int
    server_cpu_s: float | None = None  # server CPU seconds from "go" to the last report

    @property
    def lost(self) -> int:
        """Expected deliveries that never arrived."""
        return self.expected - self.received

    @property
    def server_us_per_delivery(self) -> float | None:
        """Server CPU microseconds per delivery (handshakes are done before "go": excluded)."""
        if self.server_cpu_s is None or not self.received:
            return None
        return 1e6 * self.server_cpu_s / self.received


# --- one client -------------------------------------------------------------------------


def page_origin(url: str) -> str:
    """The Origin a browser sends for a page served where `url` (ws:// or wss://) points."""
    parts = urlsplit(url)
    return f"{'https' if parts.scheme == 'wss' else 'http'}://{parts.netloc}"


async def open_socket(url: str, origin: str | None, open_timeout: float) -> ClientConnection:
    """Open one bench WebSocket the way every bench client does (raises if refused)."""
    return await connect(
        url,
        # The server accepts only its own origin (scheme, host and port): mysite/origin.py.
        origin=origin or page_origin(url),  # type: ignore[arg-type]
        compression=None,  # daphne does not negotiate it; be explicit
        open_timeout=open_timeout,
        ping_interval=None,  # idle clients must not add traffic of their own
        close_timeout=2,
        max_size=2**20,
    )


class _Client:
    """One open socket and what it received (in arrival order)."""

    __slots__ = ("closed_early", "payloads", "prefix", "recv_ns", "seen", "spec", "ws")

    def __init__(self, spec: ClientSpec, ws: ClientConnection) -> None:
        self.spec = spec
        self.ws = ws
        self.prefix = f"b|{spec.room}|"
        self.payloads: list[str] = []
        self.recv_ns: list[int] = []
        self.seen: set[str] = set()
        self.closed_early = False


class _Worker:
    """The clients of one process and the counters their readers share."""

    def __init__(self, plan: WorkerPlan) -> None:
        self.plan = plan
        self.clients: list[_Client] = []
        self.result = WorkerResult()
        self.unique = 0
        self.last_recv_ns = 0
        self.all_in = asyncio.Event()
        self.stopping = False
        self.readers: list[asyncio.Task[None]] = []

    async def connect_all(self) -> None:
        """Open every client's socket, a bounded number of handshakes at a time."""
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(spec: ClientSpec) -> None:
            async with gate:
                try:
                    ws = await open_socket(spec.url, self.plan.origin, self.plan.connect_timeout_s)
                except Exception as error:  # any refusal counts; the message says which
                    self.result.connect_failures += 1
                    if not self.result.connect_error:
                        self.result.connect_error = f"{type(error).__name__}: {error}"
                    return
            client = _Client(spec, ws)
            self.clients.append(client)
            # Read from the start: the server may send history before any bench message.
            self.readers.append(asyncio.create_task(self.read(client)))

        await asyncio.gather(*(one(spec) for spec in self.plan.clients))
        scenario = self.plan.scenario
        self.result.expected = scenario.messages * len(self.plan.clients)

    async def read(self, client: _Client) -> None:
        """Record every bench delivery to this client; ignore every other frame."""
        prefix, seen, payloads, recv_ns = (
            client.prefix,
            client.seen,
            client.payloads,
            client.recv_ns,
        )
        result = self.result
        try:
            async for raw in client.ws:
                now = time.monotonic_ns()
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(frame, dict):
                    continue
                text = frame.get("message")
                if not isinstance(text, str) or not text.startswith(prefix):
                    if frame.get("type") == "error":
                        result.error_frames += 1
                    continue
                if text in seen:
                    result.dupes += 1
                    continue
                seen.add(text)
                payloads.append(text)
                recv_ns.append(now)
                self.unique += 1
                self.last_recv_ns = now
                if self.unique >= result.expected:
                    self.all_in.set()
        except ConnectionClosed:
            pass
        if not self.stopping:
            client.closed_early = True

    async def send_all(self, client: _Client, go_ns: int) -> None:
        """Send this room's messages: back to back (blast) or on a schedule (paced)."""
        scenario = self.plan.scenario
        room = client.spec.room
        interval_ns = int(1e9 / scenario.rate) if scenario.kind == "paced" else 0
        try:
            for n in range(scenario.messages):
                if interval_ns:
                    # Pacing, not synchronisation: the schedule is the scenario.
                    delay = (go_ns + n * interval_ns - time.monotonic_ns()) / 1e9
                    if delay > 0:
                        await asyncio.sleep(delay)
                sent_ns = time.monotonic_ns()
                if self.result.first_send_ns is None:
                    self.result.first_send_ns = sent_ns
                await client.ws.send(json.dumps({"message": f"b|{room}|0|{n}|{sent_ns}"}))
                self.result.sent += 1
        except ConnectionClosed:
            pass  # the undelivered messages show up as lost

    async def run(self, go_ns: int) -> None:
        """Send, then wait for every expected delivery or for the quiet timeout."""
        plan = self.plan
        senders = [
            asyncio.create_task(self.send_all(client, go_ns))
            for client in self.clients
            if client.spec.sender
        ]
        if self.unique >= self.result.expected:
            self.all_in.set()
        quiet_ns = int(plan.quiet_s * 1e9)
        sending_until = go_ns + int(plan.scenario.send_seconds * 1e9)
        hard_deadline = go_ns + int(plan.max_wait_s * 1e9)
        while not self.all_in.is_set():
            # Give up once nothing has arrived for quiet_s after the senders' schedule ends.
            deadline = min(max(self.last_recv_ns, sending_until) + quiet_ns, hard_deadline)
            timeout = (deadline - time.monotonic_ns()) / 1e9
            if timeout <= 0:
                break
            try:
                await asyncio.wait_for(self.all_in.wait(), timeout)
            except TimeoutError:
                continue  # re-check: a delivery may have moved the deadline
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)

    def summarise(self, cpu_s: float, wall_s: float) -> WorkerResult:
        """Fold per-client records into latencies, duplicates and order errors."""
        result = self.result
        result.received = self.unique
        result.cpu_s, result.wall_s = cpu_s, wall_s
        result.last_recv_ns = self.last_recv_ns or None
        latencies = result.latencies_ns
        for client in self.clients:
            result.closed_early += client.closed_early
            # One sender per room, so its send order is the room's order: a delivery that
            # comes after a later message of the same sender breaks it.
            highest: dict[str, int] = {}
            for text, arrived in zip(client.payloads, client.recv_ns, strict=True):
                _, _, sender, n_text, sent_text = text.split("|")
                n = int(n_text)
                if n < highest.get(sender, -1):
                    result.order_errors += 1
                else:
                    highest[sender] = n
                latencies.append(arrived - int(sent_text))
        return result

    async def close_all(self) -> None:
        """Close every socket, politely but without waiting long."""
        self.stopping = True
        await asyncio.gather(*(c.ws.close() for c in self.clients), return_exceptions=True)
        await asyncio.gather(*self.readers, return_exceptions=True)


async def _worker_async(plan: WorkerPlan, conn: Connection) -> None:
    """Connect, report ready, wait for go (or stop), run, report the result."""
    worker = _Worker(plan)
    await worker.connect_all()
    conn.send(("ready", len(worker.clients)))
    loop = asyncio.get_running_loop()
    # The parent's answer arrives on a pipe; read it off the event loop's thread.
    command = await loop.run_in_executor(None, conn.recv)
    if command == "go":
        cpu0, wall0 = time.process_time(), time.monotonic()
        go_ns = time.monotonic_ns()
        await worker.run(go_ns)
        result = worker.summarise(time.process_time() - cpu0, time.monotonic() - wall0)
        conn.send(("result", result))
    await worker.close_all()


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_worker(work: Coroutine[Any, Any, None], conn: Connection) -> None:
    """In a worker process: run `work`; a crash is reported on `conn` as ("error", text)."""
    raise_fd_limit()
    try:
        asyncio.run(work)
    except KeyboardInterrupt:
        pass
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


def worker_main(plan: WorkerPlan, conn: Connection) -> None:
    """Entry point of a worker process."""
    run_worker(_worker_async(plan, conn), conn)


# --- the parent ---------------------------------------------------------------------------


def plan_clients(
    scenario: Scenario, urls: Sequence[str], processes: int, run_id: str
) -> list[list[ClientSpec]]:
    """Name fresh rooms and deal their clients round-robin over processes and server URLs."""
    per_worker: list[list[ClientSpec]] = [[] for _ in range(processes)]
    index = 0
    for r in range(scenario.rooms):
        # `\w` characters only: the tutorial's route is `ws/chat/(?P<room_name>\w+)/$`.
        room = f"bench_{run_id}_{r}"
        for i in range(scenario.clients):
            url = f"{urls[i % len(urls)]}/ws/chat/{room}/"
            per_worker[index % processes].append(ClientSpec(url, room, sender=i == 0))
            index += 1
    return [clients for clients in per_worker if clients]


def nearest_rank(sorted_values: Sequence[int], q: float) -> float | None:
    """The q-quantile by the nearest-rank method, in milliseconds (None if no values)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1] / 1e6


def merge(
    scenario: Scenario,
    results: Sequence[WorkerResult],
    connections: int,
    server_cpu: float | None,
    server_cpu_s: float | None = None,
) -> ScenarioResult:
    """Combine the workers' results into one row."""
    latencies = sorted(v for r in results for v in r.latencies_ns)
    received = sum(r.received for r in results)
    firsts = [r.first_send_ns for r in results if r.first_send_ns is not None]
    lasts = [r.last_recv_ns for r in results if r.last_recv_ns is not None]
    span_s = (max(lasts) - min(firsts)) / 1e9 if firsts and lasts else 0.0
    return ScenarioResult(
        scenario=scenario,
        connections=connections,
        expected=sum(r.expected for r in results),
        received=received,
        dupes=sum(r.dupes for r in results),
        order_errors=sum(r.order_errors for r in results),
        sent=sum(r.sent for r in results),
        p50_ms=nearest_rank(latencies, 0.50),
        p99_ms=nearest_rank(latencies, 0.99),
        deliveries_per_s=received / span_s if span_s > 0 else 0.0,
        connect_failures=sum(r.connect_failures for r in results),
        connect_error=next((r.connect_error for r in results if r.connect_error), ""),
        closed_early=sum(r.closed_early for r in results),
        error_frames=sum(r.error_frames for r in results),
        client_cpu=max((r.cpu_s / r.wall_s for r in results if r.wall_s > 0), default=0.0),
        client_cpu_s=sum(r.cpu_s for r in results),
        server_cpu=server_cpu,
        processes=len(results),
        server_cpu_s=server_cpu_s,
    )


class WorkerFailed(RuntimeError):
    """A worker process died or reported an exception."""


def receive_report(conn: Connection, deadline: float, what: str) -> tuple[str, object]:
    """The next message from a worker, or WorkerFailed when it errs or the deadline passes."""
    timeout = deadline - time.monotonic()
    if timeout <= 0 or not conn.poll(timeout):
        raise WorkerFailed(f"no {what} from a worker in time")
    try:
        kind, payload = conn.recv()
    except EOFError as error:
        raise WorkerFailed(f"a worker exited before its {what}") from error
    if kind == "error":
        raise WorkerFailed(f"a worker failed:\n{payload}")
    return kind, payload


def run_scenario(
    scenario: Scenario,
    urls: Sequence[str],
    origin: str | None,
    *,
    processes: int = 1,
    quiet_s: float = 5.0,
    connect_timeout_s: float = 60.0,
    on_connected: Callable[[], None] | None = None,
    cpu_probe: Callable[[], float] | None = None,
) -> ScenarioResult:
    """Run one scenario against servers at `urls` (ws://host:port) and merge the results.

    `on_connected` runs once every client is connected, before anything is sent (measure.py reads
    the server's memory there). `cpu_probe` returns the server's CPU seconds so far; it is read
    at "go" and after the last report.
    """
    run_id = secrets.token_hex(4)
    plans = [
        WorkerPlan(
            scenario=scenario,
            clients=clients,
            origin=origin,
            quiet_s=quiet_s,
            max_wait_s=scenario.send_seconds + 120.0,
            connect_timeout_s=connect_timeout_s,
        )
        for clients in plan_clients(scenario, urls, processes, run_id)
    ]
    workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        spawn_workers(worker_main, plans, workers)
        ready_by = (
            time.monotonic() + 30.0 + connect_timeout_s + scenario.rooms * scenario.clients / 50
        )
        connections = 0
        for _, conn in workers:
            _, connected = receive_report(conn, ready_by, "ready")
            assert isinstance(connected, int)
            connections += connected
        if on_connected is not None:
            on_connected()
        if scenario.hold > 0:
            time.sleep(scenario.hold)  # idle: holding the connections is the scenario
        cpu0, wall0 = (cpu_probe(), time.monotonic()) if cpu_probe else (0.0, 0.0)
        for _, conn in workers:
            conn.send("go")
        done_by = time.monotonic() + scenario.send_seconds + 180.0
        results: list[WorkerResult] = []
        for _, conn in workers:
            _, result = receive_report(conn, done_by, "result")
            assert isinstance(result, WorkerResult)
            results.append(result)
        server_cpu_s = cpu_probe() - cpu0 if cpu_probe else None
        server_cpu = server_cpu_s / (time.monotonic() - wall0) if server_cpu_s is not None else None
        for worker, _ in workers:
            worker.join(timeout=30)
        return merge(scenario, results, connections, server_cpu, server_cpu_s)
    finally:
        for worker, conn in workers:
            stop_worker(worker, conn)


def spawn_workers(
    main: Callable[[Any, Connection], None],
    plans: Sequence[object],
    workers: list[tuple[multiprocessing.process.BaseProcess, Connection]],
) -> None:
    """Start one worker process per plan, running `main(plan, conn)`; each is appended to
    `workers` as it starts, so that the caller's `finally` can stop (`stop_worker`) every one."""
    # spawn, not fork: a clean interpreter per worker, whatever the parent has loaded.
    context = multiprocessing.get_context("spawn")
    for plan in plans:
        parent_end, child_end = context.Pipe()
        process = context.Process(target=main, args=(plan, child_end), daemon=True)
        process.start()
        child_end.close()
        workers.append((process, parent_end))


def stop_worker(worker: multiprocessing.process.BaseProcess, conn: Connection) -> None:
    """End a worker process that is still running (SIGTERM, then SIGKILL); close its pipe."""
    if worker.is_alive():
        worker.terminate()
        worker.join(timeout=5)
    if worker.is_alive():
        worker.kill()
        worker.join()
    conn.close()


# --- standalone use -----------------------------------------------------------------------


def format_result(result: ScenarioResult) -> str:
    """One human-readable line."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    per_delivery = 1e6 * result.client_cpu_s / max(1, result.received)
    return (
        f"{result.scenario.name}: {result.deliveries_per_s:,.0f} deliveries/s, "
        f"p50 {ms(result.p50_ms)} ms, p99 {ms(result.p99_ms)} ms, "
        f"{result.received}/{result.expected} delivered, lost {result.lost}, "
        f"dupes {result.dupes}, order errors {result.order_errors}, "
        f"connect failures {result.connect_failures}, closed early {result.closed_early}, "
        f"client CPU {result.client_cpu:.0%} (busiest of {result.processes} processes), "
        f"{per_delivery:.1f} µs of client CPU per delivery"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one scenario against a server that is already running."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", required=True, help="ws://127.0.0.1:PORT")
    parser.add_argument(
        "--origin", help="Origin header (default: http://<host:port> of each client's --url)"
    )
    parser.add_argument("--kind", choices=["blast", "paced", "idle"], default="blast")
    parser.add_argument("--rooms", type=int, default=1)
    parser.add_argument("--clients", type=int, default=100, help="per room, sender included")
    parser.add_argument("--messages", type=int, default=100, help="per room")
    parser.add_argument("--rate", type=float, default=2.0, help="paced: messages/s per room")
    parser.add_argument("--hold", type=float, default=0.0, help="idle: seconds to hold")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds of silence = done")
    args = parser.parse_args(argv)
    raise_fd_limit()
    urls = [url.rstrip("/") for url in args.url]
    scenario = Scenario(
        kind=args.kind,
        rooms=args.rooms,
        clients=args.clients,
        messages=1 if args.kind == "idle" else args.messages,
        rate=args.rate if args.kind == "paced" else 0.0,
        hold=args.hold,
    )
    result = run_scenario(scenario, urls, args.origin, processes=args.processes, quiet_s=args.quiet)
    print(format_result(result))
    if result.connect_error:
        print(f"first connect failure: {result.connect_error}")
    return 1 if result.lost or result.order_errors else 0


if __name__ == "__main__":
    sys.exit(main())
