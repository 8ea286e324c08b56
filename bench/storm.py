"""Reconnect storm: a daphne process dies and every one of its clients comes back at once.

    python -m bench.storm                  # alone: its own Redis, database and daphne
    python -m bench.storm --clients 1000   # a smaller storm
    python -m bench.run --scenario storm:5000

Rooms of 100 clients, each room with 20 stored messages, in two load-client processes (spawned,
as in bench/loadclient.py). Every client joins with `?sync=1` and holds the history. Then the
server is SIGKILLed and started again on the same port and database. Each client notices the
close, waits a random 0–1 s, and reconnects with `?after=<highest seq held>`, retrying a refused
or failed handshake every 100–200 ms. One client per room, the poster, reconnects without the
wait and, once caught up, posts 5 new messages (with `client_id`s, resent after a reconnect
until acknowledged), so that the others must catch up on what they missed, whenever they return.

Met when every client holds every message of its room (seq 1…25), in order, exactly once,
within 10 s of the new server listening, and daphne's resident memory during the storm (sampled
from /proc) stays within MAX_PEAK_BYTES_PER_CONNECTION per client over what the new process
held when it started listening. docs/benchmarks.md ("Reconnect storm") gives the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import multiprocessing
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bench.fairness import seed
from bench.loadclient import (
    CONNECT_CONCURRENCY,
    WorkerFailed,
    nearest_rank,
    open_socket,
    raise_fd_limit,
    receive_report,
    run_worker,
    spawn_workers,
    stop_worker,
)
from bench.processes import (
    busy_cores,
    cpu_seconds,
    fresh_postgres_database,
    migrate,
    own_redis,
    progress,
    server_env,
    terminate_on_sigterm,
)
from bench.targets import checklist
from chat.testing.server import LISTEN_BACKLOG, DaphneServer

# The storm: 5,000 sockets in rooms of 100, each room holding 20 messages.
CLIENTS = 5000
ROOM_SIZE = 100
HISTORY = 20
# Posted to each room by its poster once the new server has it caught up.
NEW_POSTS = 5
# A client waits a random delay up to this after noticing the close, then reconnects...
RECONNECT_SPREAD_S = 1.0
# ...and retries a refused or failed handshake after a random delay in this range.
RETRY_S = (0.1, 0.2)
# The target: from the new server listening to the last client holding its room's last seq.
MAX_CATCH_UP_S = 10.0
# Memory: the storm's peak VmRSS over the new process's at listen time, per client, at most
# twice the idle target (bench/targets.py): sockets, catch-up reads and buffers, bounded.
MAX_PEAK_BYTES_PER_CONNECTION = 64_000
# A handshake that has not completed in this long is abandoned and retried.
HANDSHAKE_TIMEOUT_S = 10.0
# The first join (before the storm) may take a while on a busy machine.
JOIN_TIMEOUT_S = 60.0
# How long the workers wait for every client to converge before reporting what they have.
STORM_TIMEOUT_S = 60.0
# daphne's VmRSS is read this often during the storm.
RSS_SAMPLE_S = 0.05


# --- one client -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StormPlan:
    """What one worker process runs, picklable: its clients' rooms, posters marked."""

    base_url: str
    run_id: str
    clients: list[tuple[str, bool]]  # (room, poster)
    history: int
    new_posts: int


@dataclass
class StormTally:
    """What one worker saw; merged by the parent."""

    clients: int = 0
    converged: int = 0  # held exactly seq 1…last, in order, at the end
    missing: int = 0  # messages a client never got, summed
    dupes: int = 0
    order_errors: int = 0
    done_ns: array = field(default_factory=lambda: array("q"))  # monotonic: last seq held
    resynced_ns: array = field(default_factory=lambda: array("q"))  # first `synced` after kill
    attempts: int = 0  # reconnect handshakes tried
    failed_attempts: int = 0  # of which refused, timed out or reset
    failures: dict[str, int] = field(default_factory=dict)  # failed attempts by exception
    closed_again: int = 0  # sockets closed by the server after the reconnect
    error_frames: int = 0
    posts_acked: int = 0
    problems: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def add_problem(self, text: str) -> None:
        """Keep the first few problems' descriptions."""
        if len(self.problems) < 5:
            self.problems.append(text)


class StormClient:
    """One client: joins, holds its room's messages, and reconnects whenever it is closed."""

    __slots__ = (
        "done_ns",
        "held",
        "last",
        "pending",
        "poster",
        "resynced_ns",
        "room",
        "sessions",
        "synced_seq",
        "url",
    )

    def __init__(self, base_url: str, room: str, poster: bool, last: int) -> None:
        self.url = f"{base_url}/ws/chat/{room}/"
        self.room = room
        self.poster = poster
        self.last = last  # the room's last seq once every new post is stored
        self.held: list[int] = []
        self.synced_seq = 0
        self.sessions = 0
        self.done_ns = 0
        self.resynced_ns = 0
        # The poster's posts not yet acknowledged: client_id → text.
        self.pending: dict[str, str] = {}

    @property
    def position(self) -> int:
        """What `?after=` names: the highest seq held, or a quiet room's `synced` position."""
        return max(self.held[-1] if self.held else 0, self.synced_seq)


class StormWorker:
    """The clients of one process, and what they share."""

    def __init__(self, plan: StormPlan) -> None:
        self.plan = plan
        last = plan.history + plan.new_posts
        self.clients = [StormClient(plan.base_url, room, p, last) for room, p in plan.clients]
        self.tally = StormTally(clients=len(self.clients))
        self.joined = 0
        self.all_joined = asyncio.Event()
        self.done = 0
        self.all_done = asyncio.Event()
        self.storming = False
        self.stopping = False
        self.tasks: list[asyncio.Task[None]] = []
        self.sockets: set[ClientConnection] = set()

    async def join_all(self) -> None:
        """Start every client; return once each holds the history (or JOIN_TIMEOUT_S passes)."""
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self.tasks = [asyncio.create_task(self.live(c, gate)) for c in self.clients]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_joined.wait(), JOIN_TIMEOUT_S)

    async def live(self, client: StormClient, gate: asyncio.Semaphore) -> None:
        """Join, then read; on every close wait (unless the poster) and reconnect."""
        async with gate:
            ws = await self.connect(client, "?sync=1")
        while not self.stopping:
            self.sockets.add(ws)
            try:
                await self.read(client, ws)
            finally:
                self.sockets.discard(ws)
            if self.stopping:
                return
            if client.sessions > 1:
                self.tally.closed_again += 1
            if not client.poster:
                await asyncio.sleep(random.uniform(0, RECONNECT_SPREAD_S))
            ws = await self.connect(client, f"?after={client.position}")

    async def connect(self, client: StormClient, query: str) -> ClientConnection:
        """Open the client's socket, retrying every 100–200 ms until the server takes it."""
        while True:
            if self.storming:
                self.tally.attempts += 1
            try:
                ws = await open_socket(client.url + query, None, HANDSHAKE_TIMEOUT_S)
            except Exception as error:  # refused, reset, timed out, 403: all are retried
                if self.storming:
                    self.tally.failed_attempts += 1
                    kind = type(error).__name__
                    self.tally.failures[kind] = self.tally.failures.get(kind, 0) + 1
                await asyncio.sleep(random.uniform(*RETRY_S))
                continue
            client.sessions += 1
            return ws

    async def read(self, client: StormClient, ws: ClientConnection) -> None:
        """Hold every message; on `synced`, count the join or the return, and let the poster
        post (again, what is still unacknowledged)."""
        tally = self.tally
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "message":
                    self.hold(client, frame.get("seq"))
                elif kind == "synced":
                    client.synced_seq = max(client.synced_seq, int(frame["last_seq"]))
                    await self.synced(client, ws)
                elif kind == "ack":
                    if client.pending.pop(frame.get("client_id"), None) is not None:
                        tally.posts_acked += 1
                elif kind == "error":
                    tally.error_frames += 1
                    tally.add_problem(f"error frame: {frame}")

    def hold(self, client: StormClient, seq: object) -> None:
        """Record a message."""
        if not isinstance(seq, int):
            self.tally.add_problem(f"a message without a seq in {client.room}")
            return
        client.held.append(seq)
        self.check_done(client)

    def check_done(self, client: StormClient) -> None:
        """Done: back (synced again since the kill) and holding the room's last seq."""
        if client.done_ns or not client.resynced_ns or client.position < client.last:
            return
        client.done_ns = time.monotonic_ns()
        self.done += 1
        if self.done == len(self.clients):
            self.all_done.set()

    async def synced(self, client: StormClient, ws: ClientConnection) -> None:
        """A join or a return is complete."""
        if not self.storming:
            self.joined += 1
            if self.joined == len(self.clients):
                self.all_joined.set()
            return
        if not client.resynced_ns:
            client.resynced_ns = time.monotonic_ns()
            self.check_done(client)
        if client.poster:
            if not client.pending and client.position < client.last:
                run_id = self.plan.run_id
                for n in range(self.plan.new_posts):
                    client.pending[f"storm-{run_id}-{client.room}-{n}"] = f"new {n}"
            for client_id, text in list(client.pending.items()):
                post = {"type": "message", "message": text, "client_id": client_id}
                await ws.send(json.dumps(post))

    async def storm(self) -> None:
        """From the kill on: wait until every client is done, or STORM_TIMEOUT_S passes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), STORM_TIMEOUT_S)

    def summarise(self) -> StormTally:
        """Check each client's messages against seq 1…last; collect the times."""
        tally = self.tally
        for client in self.clients:
            expected = list(range(1, client.last + 1))
            held = client.held
            if held == expected:
                tally.converged += 1
            else:
                unique = set(held)
                tally.missing += len(set(expected) - unique)
                tally.dupes += len(held) - len(unique)
                errors = sum(1 for a, b in itertools.pairwise(held) if b <= a)
                tally.order_errors += errors
                tally.add_problem(f"{client.room}: held {held}")
            tally.done_ns.append(client.done_ns)
            tally.resynced_ns.append(client.resynced_ns)
        return tally

    async def close_all(self) -> None:
        """Stop every client and close its socket."""
        self.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in list(self.sockets)), return_exceptions=True)
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _storm_worker(plan: StormPlan, conn: Connection) -> None:
    """Join and report ready; on "go" (sent just before the kill) run the storm, report."""
    worker = StormWorker(plan)
    await worker.join_all()
    conn.send(("ready", worker.joined))
    loop = asyncio.get_running_loop()
    # The parent's command arrives on a pipe; read it off the event loop's thread.
    command = await loop.run_in_executor(None, conn.recv)
    if command == "go":
        worker.storming = True
        cpu0, wall0 = time.process_time(), time.monotonic()
        await worker.storm()
        tally = worker.summarise()
        tally.cpu_s, tally.wall_s = time.process_time() - cpu0, time.monotonic() - wall0
        conn.send(("result", tally))
    await worker.close_all()


def worker_main(plan: StormPlan, conn: Connection) -> None:
    """Entry point of a worker process."""
    run_worker(_storm_worker(plan, conn), conn)


# --- the parent -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """The storm's sizes: the issue's by default."""

    clients: int = CLIENTS
    room_size: int = ROOM_SIZE
    history: int = HISTORY
    new_posts: int = NEW_POSTS
    processes: int = 2
    # daphne's listen queue: deploy/chat@.service's by default; 50 is Twisted's own.
    backlog: int = LISTEN_BACKLOG

    @property
    def rooms(self) -> int:
        """Rooms of room_size clients."""
        return max(1, self.clients // self.room_size)


@dataclass
class StormResult:
    """The storm's figures; `error` says why there are none."""

    knobs: Knobs = field(default_factory=Knobs)
    target: str = "project"
    joined: int = 0
    tally: StormTally | None = None
    kill_to_listen_s: float = 0.0  # SIGKILL to the new process listening
    resync_s: list[float] = field(default_factory=list)  # listen → each client's `synced`
    done_s: list[float] = field(default_factory=list)  # listen → each client's last seq
    rss_at_rest_kib: int = 0  # the old process, every client joined
    rss_listening_kib: int = 0  # the new process, as it starts listening
    rss_peak_kib: int = 0  # the new process, during the storm
    rss_end_kib: int = 0  # the new process, every client back
    server_start_cpu_s: float = 0.0  # the new process's CPU time when it starts listening
    server_cpu_s: float = 0.0  # ... and once every client is back
    busy_before: float = 0.0
    error: str = ""

    @property
    def catch_up_s(self) -> float | None:
        """Listen → the last client holding its room's last seq (None if one never did)."""
        if not self.done_s or len(self.done_s) < self.knobs.clients:
            return None
        return max(self.done_s)

    @property
    def peak_bytes_per_connection(self) -> float:
        """The storm's peak VmRSS over the new process's at listen time, per client."""
        return (self.rss_peak_kib - self.rss_listening_kib) * 1024 / max(1, self.knobs.clients)

    @property
    def clean(self) -> bool:
        """Every client converged: every message, in order, exactly once."""
        t = self.tally
        return (
            not self.error
            and t is not None
            and self.joined == self.knobs.clients
            and t.converged == self.knobs.clients
            and not (t.missing or t.dupes or t.order_errors)
        )

    @property
    def met(self) -> bool:
        """Clean, within MAX_CATCH_UP_S, within MAX_PEAK_BYTES_PER_CONNECTION."""
        catch_up = self.catch_up_s
        return (
            self.clean
            and catch_up is not None
            and catch_up <= MAX_CATCH_UP_S
            and self.peak_bytes_per_connection <= MAX_PEAK_BYTES_PER_CONNECTION
        )


def plan_workers(base_url: str, knobs: Knobs, run_id: str) -> list[StormPlan]:
    """Name the rooms; deal their clients round-robin over the workers, posters first."""
    per_worker: list[list[tuple[str, bool]]] = [[] for _ in range(knobs.processes)]
    index = 0
    for r in range(knobs.rooms):
        room = f"storm_{run_id}_{r}"
        for i in range(knobs.room_size):
            per_worker[index % knobs.processes].append((room, i == 0))
            index += 1
    return [
        StormPlan(base_url, run_id, clients, knobs.history, knobs.new_posts)
        for clients in per_worker
        if clients
    ]


async def seed_rooms(base_url: str, rooms: Sequence[str], history: int) -> None:
    """Store `history` messages in each room, through the protocol, all rooms at once."""
    await asyncio.gather(*(seed(f"{base_url}/ws/chat/{room}/", None, history) for room in rooms))


class RssSampler:
    """Reads the server's VmRSS every RSS_SAMPLE_S on a thread; keeps the peak."""

    def __init__(self, server: DaphneServer) -> None:
        self.server = server
        self.peak_kib = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        """Sample until stopped; a process not yet (or no longer) there is skipped."""
        while not self.stopped.wait(RSS_SAMPLE_S):
            self.sample()

    def sample(self) -> int:
        """One reading, folded into the peak (0 when there is no process)."""
        try:
            kib = self.server.rss() // 1024
        except (AssertionError, OSError, RuntimeError):
            return 0
        self.peak_kib = max(self.peak_kib, kib)
        return kib

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()


def run_storm(server: DaphneServer, knobs: Knobs = Knobs(), target: str = "project") -> StormResult:
    """Seed, join every client, kill the running `server`, restart it, measure the return."""
    result = StormResult(knobs=knobs, target=target)
    run_id = secrets.token_hex(4)
    plans = plan_workers(server.ws_url, knobs, run_id)
    rooms = list(dict.fromkeys(room for plan in plans for room, _ in plan.clients))
    asyncio.run(seed_rooms(server.ws_url, rooms, knobs.history))
    workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    try:
        spawn_workers(worker_main, plans, workers)
        ready_by = time.monotonic() + 30.0 + JOIN_TIMEOUT_S
        for _, conn in workers:
            _, joined = receive_report(conn, ready_by, "ready")
            assert isinstance(joined, int)
            result.joined += joined
        if result.joined < knobs.clients:
            result.error = f"only {result.joined} of {knobs.clients} clients joined"
            return result
        result.rss_at_rest_kib = server.rss() // 1024
        for _, conn in workers:
            conn.send("go")
        with RssSampler(server) as sampler:
            killed = time.monotonic_ns()
            server.kill()
            server.start()
            listening = time.monotonic_ns()
            assert server.process is not None
            result.server_start_cpu_s = cpu_seconds([server.process.pid])
            result.rss_listening_kib = sampler.sample()
            sampler.peak_kib = result.rss_listening_kib  # the old process's samples are not ours
            result.kill_to_listen_s = (listening - killed) / 1e9
            progress(
                f"storm: restarted (pid {server.process.pid}) in "
                f"{result.kill_to_listen_s:.1f}s; "
                f"{knobs.clients:,} clients returning …"
            )
            done_by = time.monotonic() + STORM_TIMEOUT_S + 60.0
            tallies = []
            for _, conn in workers:
                _, tally = receive_report(conn, done_by, "result")
                assert isinstance(tally, StormTally)
                tallies.append(tally)
            result.rss_end_kib = sampler.sample()
            result.server_cpu_s = cpu_seconds([server.process.pid])
        result.rss_peak_kib = sampler.peak_kib
        result.tally = merge(tallies)
        result.done_s = [(ns - listening) / 1e9 for ns in result.tally.done_ns if ns]
        result.resync_s = [(ns - listening) / 1e9 for ns in result.tally.resynced_ns if ns]
        for worker, _ in workers:
            worker.join(timeout=30)
        return result
    finally:
        for worker, conn in workers:
            stop_worker(worker, conn)


def merge(tallies: Sequence[StormTally]) -> StormTally:
    """One tally of every worker's."""
    out = StormTally()
    for t in tallies:
        for name in (
            "clients",
            "converged",
            "missing",
            "dupes",
            "order_errors",
            "attempts",
            "failed_attempts",
            "closed_again",
            "error_frames",
            "posts_acked",
        ):
            setattr(out, name, getattr(out, name) + getattr(t, name))
        out.done_ns.extend(t.done_ns)
        out.resynced_ns.extend(t.resynced_ns)
        for kind, count in t.failures.items():
            out.failures[kind] = out.failures.get(kind, 0) + count
        out.problems += t.problems[: 5 - len(out.problems)]
        out.cpu_s = max(out.cpu_s, t.cpu_s)
        out.wall_s = max(out.wall_s, t.wall_s)
    return out


def run_on_target(
    env: dict[str, str], workdir: Path, knobs: Knobs = Knobs(), target: str = "project"
) -> StormResult:
    """The storm on a fresh daphne process of the project (env from `server_env`)."""
    server = DaphneServer(
        redis_url=env["REDIS_URL"],
        database=workdir / "storm.sqlite3",  # unused: env's DATABASE_URL wins
        extra_env=env,
        log_path=workdir / f"storm-{target}.log",
        # As deployed (deploy/chat@.service): daphne's 5 s default drops handshakes that
        # waited their turn in the storm, and each is then done again.
        daphne_args=["--websocket_connect_timeout", "30"],
        backlog=knobs.backlog,
    )
    busy = busy_cores()
    try:
        server.start()
        try:
            result = run_storm(server, knobs, target)
        finally:
            server.stop()
    except (RuntimeError, OSError, TimeoutError, WorkerFailed) as error:
        log = workdir / f"storm-{target}.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
        progress(f"storm: FAILED: {error}\n{tail}")
        result = StormResult(knobs=knobs, target=target, error=str(error).splitlines()[0])
    result.busy_before = busy
    return result


# --- the report -----------------------------------------------------------------------------


def _quantiles(values: Sequence[float]) -> str:
    ordered = sorted(int(v * 1e9) for v in values)
    p50, p99 = nearest_rank(ordered, 0.5), nearest_rank(ordered, 0.99)
    if p50 is None or p99 is None:
        return "-"
    return f"p50 {p50 / 1000:.2f}s, p99 {p99 / 1000:.2f}s, last {max(values):.2f}s"


def report(result: StormResult) -> list[str]:
    """The section printed after the benchmark table (and by `python -m bench.storm`)."""
    k = result.knobs
    lines = [
        f"reconnect storm ({result.target}, one daphne process SIGKILLed and restarted, "
        f"listen backlog {k.backlog}, CHAT_LIMITS=off): {k.clients:,} clients in {k.rooms} "
        f"rooms of {k.room_size}, "
        f"{k.history} messages each; {k.new_posts} new posts per room after the restart; "
        f"{k.processes} client processes; {result.busy_before:.2f} cores busy before"
    ]
    t = result.tally
    if result.error or t is None:
        return [*lines, f"  error: {result.error or 'no result'}"]
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(t.failures.items()))
    failed = f"{t.failed_attempts:,} failed" + (f": {kinds}" if kinds else "")
    storm_cpu_s = result.server_cpu_s - result.server_start_cpu_s
    lines += [
        f"  restart: SIGKILL → listening in {result.kill_to_listen_s:.2f}s; from then on:",
        f"  back:    {len(result.resync_s):,} clients synced again, {_quantiles(result.resync_s)}; "
        f"{t.attempts:,} handshakes tried ({failed})",
        f"  caught up: {len(result.done_s):,} hold their room's last seq, "
        f"{_quantiles(result.done_s)} (target ≤ {MAX_CATCH_UP_S:g}s)",
        f"  correct: {t.converged:,} of {k.clients:,} hold seq 1…{k.history + k.new_posts} "
        f"exactly once in order; {t.missing} missing, {t.dupes} dupes, {t.order_errors} out of "
        f"order; {t.posts_acked} of {k.rooms * k.new_posts} new posts acked; "
        f"{t.closed_again} closed again, {t.error_frames} error frames",
        f"  memory:  daphne VmRSS {result.rss_at_rest_kib / 1024:,.0f} MiB before the kill "
        f"(every client joined); new process {result.rss_listening_kib / 1024:,.0f} MiB "
        f"listening, peak {result.rss_peak_kib / 1024:,.0f} MiB, "
        f"{result.rss_end_kib / 1024:,.0f} MiB at the end = "
        f"{result.peak_bytes_per_connection / 1000:.1f} KB per client at the peak "
        f"(target ≤ {MAX_PEAK_BYTES_PER_CONNECTION / 1000:.0f} KB)",
        f"  cpu:     the new daphne {storm_cpu_s:.1f}s from listening to the end = "
        f"{storm_cpu_s / max(1, k.clients) * 1e3:.2f} ms per client "
        f"({result.server_start_cpu_s:.1f}s to start); the clients "
        f"{t.cpu_s / max(t.wall_s, 1e-9):.0%} of a core (the busier process)",
    ]
    lines += [f"  problem: {p}" for p in t.problems]
    return lines


def check(result: StormResult) -> tuple[str, bool]:
    """The line for the targets checklist, and whether the target is met."""
    label = "reconnect storm" if result.target == "project" else f"{result.target} storm"
    t = result.tally
    if result.error or t is None:
        return (f"{label}: did not run ({result.error or 'no result'})", False)
    catch_up = result.catch_up_s
    return (
        f"{label}: {t.converged:,} of {result.knobs.clients:,} clients whole, last one "
        + ("never" if catch_up is None else f"{catch_up:.1f}s")
        + f" after the restart (≤ {MAX_CATCH_UP_S:g}s), peak "
        f"{result.peak_bytes_per_connection / 1000:.1f} KB per client "
        f"(≤ {MAX_PEAK_BYTES_PER_CONNECTION / 1000:.0f} KB)",
        result.met,
    )


# --- the command ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Start Redis, migrate a fresh database, run the storm on the project, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=CLIENTS, help="in rooms of 100")
    parser.add_argument("--postgres", action="store_true", help="on a fresh PostgreSQL database")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    parser.add_argument(
        "--backlog", type=int, default=LISTEN_BACKLOG, help="daphne's listen queue (Twisted's: 50)"
    )
    args = parser.parse_args(argv)
    terminate_on_sigterm()
    raise_fd_limit()
    started_at = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-storm-"))
    knobs = Knobs(
        clients=args.clients, room_size=min(ROOM_SIZE, args.clients), backlog=args.backlog
    )
    try:
        with contextlib.ExitStack() as stack:
            given_redis = os.environ.get("BENCH_REDIS_URL")
            redis_url = given_redis or stack.enter_context(own_redis(workdir))
            database = f"sqlite:///{workdir / 'bench.sqlite3'}"
            if args.postgres:
                database = stack.enter_context(fresh_postgres_database())
            env = server_env(redis_url, database)
            if not migrate(env, workdir / "migrate.log"):
                return 1
            target = "project-pg" if args.postgres else "project"
            result = run_on_target(env, workdir, knobs, target)
    finally:
        if args.keep:
            progress(f"logs and database kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"machine: {os.cpu_count()} cores; took {time.monotonic() - started_at:.0f}s")
    print("\n".join(report(result)))
    text, met = check(result)
    print()
    print(checklist([(text, met)]))
    return 0 if met else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
