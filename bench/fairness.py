"""Fair catch-up: does a flood of whole-history catch-ups slow a quiet user down?

    python -m bench.fairness       # alone: its own Redis, database and daphne (about 30 s)
    python -m bench.run            # also part of `make bench`, after the table

One daphne process runs the project with `CHAT_LIMITS=off`. A room of 10,000 stored messages
is seeded through the WebSocket protocol (posts with `client_id`s, in bursts, each burst's acks
awaited). Then a quiet user in another room posts every 50 ms and times each post's ack (send
→ ack): first alone (idle), then while 4 clients loop `?after=0` on the big room (loaded): each
connects, reads until `synced`, checks it got seq 1..10,000 once each in order, closes, and
reconnects. The target (security issue "fair catch-up"): loaded ack p50 ≤ 5× idle ack p50.
docs/benchmarks.md ("Fair catch-up") explains the method and the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from bench.loadclient import (
    WorkerFailed,
    nearest_rank,
    open_socket,
    raise_fd_limit,
    receive_report,
    run_worker,
    stop_worker,
)
from bench.measure import warm_up
from bench.processes import (
    TARGETS,
    busy_cores,
    daphnes,
    log_tail,
    migrate,
    own_redis,
    progress,
    server_env,
    terminate_on_sigterm,
)
from bench.targets import checklist

# The scenario of the issue: 4 clients looping `?after=0` on a room of 10,000 messages.
BIG_ROOM_MESSAGES = 10_000
LOOPING_CLIENTS = 4
# The quiet user posts every 50 ms: alone for IDLE_S, then beside the catch-ups for LOAD_S.
QUIET_INTERVAL_S = 0.05
IDLE_S = 5.0
LOAD_S = 10.0
# The target: the quiet user's loaded ack p50 at most this many times its idle p50.
MAX_LOADED_P50_RATIO = 5.0
# Seeding: posts sent back to back per burst, then that burst's acks awaited.
SEED_BURST = 500
# A chat-sized message (~200 bytes as a `message` frame with its author, time and client_id).
SEED_FILLER = "catch-up history, a line of ordinary chat length"
# How long a handshake, or the acks still due after a phase, may take before they count as lost.
CONNECT_TIMEOUT_S = 30.0
ACK_TIMEOUT_S = 10.0


# --- what is measured ---------------------------------------------------------------------


@dataclass
class AckStats:
    """The quiet user's posts in one phase: send → ack latencies."""

    seconds: float
    sent: int = 0
    latencies_ns: list[int] = field(default_factory=list)

    @property
    def acked(self) -> int:
        """Posts acknowledged (in time)."""
        return len(self.latencies_ns)

    def quantile_ms(self, q: float) -> float | None:
        """The q-quantile of the latencies (nearest rank), in milliseconds."""
        return nearest_rank(sorted(self.latencies_ns), q)

    def describe(self) -> str:
        """`p50 6.1 ms, p99 9.0 ms (100 of 100 acked)`."""
        return (
            f"p50 {_ms(self.quantile_ms(0.5))} ms, p99 {_ms(self.quantile_ms(0.99))} ms "
            f"({self.acked} of {self.sent} acked)"
        )


@dataclass
class CatchUps:
    """What the looping clients received, merged over all of them."""

    clients: int
    expected: int  # messages per catch-up
    completed: int = 0  # reached `synced` with exactly seq 1..expected, in order
    bad: int = 0  # reached `synced` with a gap, a duplicate, a wrong order or a wrong count
    problems: list[str] = field(default_factory=list)  # the first few, for the notes
    bytes_received: int = 0  # every frame's payload, whole catch-ups and cut-off ones
    messages_received: int = 0
    durations_s: list[float] = field(default_factory=list)  # handshake start → `synced`
    cut_off: int = 0  # closed by the server before `synced`
    connect_failures: int = 0
    connect_error: str = ""
    cpu_s: float = 0.0  # the loader process's CPU time over the phase
    wall_s: float = 0.0

    def add_problem(self, text: str) -> None:
        """Keep the first few problems' descriptions."""
        if len(self.problems) < 5:
            self.problems.append(text)


@dataclass
class FairnessResult:
    """The scenario's figures; `error` says why there are none."""

    big_room_messages: int = BIG_ROOM_MESSAGES
    seed_s: float = 0.0
    idle: AckStats | None = None
    loaded: AckStats | None = None
    catch_ups: CatchUps | None = None
    server_cpu_idle: float | None = None  # daphne CPU seconds ÷ wall seconds, per phase
    server_cpu_loaded: float | None = None
    error: str = ""

    @property
    def ratio(self) -> float | None:
        """Loaded ack p50 ÷ idle ack p50."""
        if self.idle is None or self.loaded is None:
            return None
        idle, loaded = self.idle.quantile_ms(0.5), self.loaded.quantile_ms(0.5)
        if not idle or loaded is None:
            return None
        return loaded / idle

    @property
    def clean(self) -> bool:
        """Every quiet post acked, every catch-up whole, no handshake refused."""
        c = self.catch_ups
        return (
            not self.error
            and self.idle is not None
            and self.loaded is not None
            and c is not None
            and self.idle.acked == self.idle.sent
            and self.loaded.acked == self.loaded.sent
            and c.completed > 0
            and not c.bad
            and not c.cut_off
            and not c.connect_failures
        )

    @property
    def met(self) -> bool:
        """The target: clean, and the loaded p50 at most MAX_LOADED_P50_RATIO × the idle."""
        ratio = self.ratio
        return self.clean and ratio is not None and ratio <= MAX_LOADED_P50_RATIO


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# --- seeding the big room -------------------------------------------------------------------


async def read_until_synced(ws: ClientConnection) -> int:
    """Read a fresh connection's history up to its `synced` frame; return `last_seq`."""
    while True:
        frame = json.loads(await ws.recv(decode=False))
        if frame.get("type") == "synced":
            return int(frame["last_seq"])


async def seed(url: str, origin: str | None, count: int) -> None:
    """Post `count` messages to a fresh room, SEED_BURST at a time, each burst's acks awaited.

    Raises RuntimeError unless the acks number the posts 1..count in the order sent.
    """
    run_id = secrets.token_hex(4)
    ws = await open_socket(f"{url}?sync=1", origin, CONNECT_TIMEOUT_S)
    try:
        if await read_until_synced(ws) != 0:
            raise RuntimeError("the room to seed is not empty")
        for start in range(0, count, SEED_BURST):
            burst = range(start, min(count, start + SEED_BURST))
            for n in burst:
                text = f"{n + 1:05d} {SEED_FILLER}"
                post = {"type": "message", "message": text, "client_id": f"seed-{run_id}-{n}"}
                await ws.send(json.dumps(post))
            expected = {f"seed-{run_id}-{n}": n + 1 for n in burst}
            while expected:
                frame = json.loads(await ws.recv(decode=False))
                kind = frame.get("type")
                if kind == "error":
                    raise RuntimeError(f"seeding refused: {frame}")
                if kind == "ack":
                    want = expected.pop(frame.get("client_id"), None)
                    if want != frame.get("seq"):
                        raise RuntimeError(f"seeding: ack {frame} where seq {want} was due")
    finally:
        await ws.close()


# --- the quiet user -------------------------------------------------------------------------


class QuietUser:
    """One socket in a room of its own, posting on a schedule and timing each ack."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.sent_ns: dict[str, int] = {}  # client_id → send time, until acked
        self.stats = AckStats(0.0)
        self.all_acked = asyncio.Event()
        self.reader = asyncio.create_task(self.read())
        self.run_id = secrets.token_hex(4)
        self.posts = 0

    @classmethod
    async def join(cls, url: str, origin: str | None) -> QuietUser:
        """Connect to a fresh room and read its (empty) history."""
        ws = await open_socket(f"{url}?sync=1", origin, CONNECT_TIMEOUT_S)
        await read_until_synced(ws)
        return cls(ws)

    async def read(self) -> None:
        """Time every ack of a post of the current phase; ignore every other frame."""
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.ws:
                now = time.monotonic_ns()
                frame = json.loads(raw)
                if frame.get("type") != "ack":
                    continue
                sent = self.sent_ns.pop(frame.get("client_id"), None)
                if sent is not None:
                    self.stats.latencies_ns.append(now - sent)
                    if not self.sent_ns:
                        self.all_acked.set()

    async def phase(self, seconds: float) -> AckStats:
        """Post every QUIET_INTERVAL_S for `seconds`, then wait for the acks still due."""
        self.stats, self.sent_ns = AckStats(seconds), {}
        start = time.monotonic_ns()
        for n in range(round(seconds / QUIET_INTERVAL_S)):
            # Pacing, not synchronisation: the schedule is the scenario.
            delay = (start + n * QUIET_INTERVAL_S * 1e9 - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            self.posts += 1
            client_id = f"quiet-{self.run_id}-{self.posts}"
            post = {"type": "message", "message": f"quiet {self.posts}", "client_id": client_id}
            self.sent_ns[client_id] = time.monotonic_ns()
            self.stats.sent += 1
            await self.ws.send(json.dumps(post))
        if self.sent_ns:
            self.all_acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_acked.wait(), ACK_TIMEOUT_S)
        stats, self.sent_ns = self.stats, {}  # acks later than this are not counted
        return stats

    async def close(self) -> None:
        """Close the socket and stop reading."""
        await self.ws.close()
        await asyncio.gather(self.reader, return_exceptions=True)


# --- the looping clients (a process of their own) ---------------------------------------------


class Refused(Exception):
    """The server refused a looping client's handshake."""


async def catch_up_once(url: str, origin: str | None, catch_ups: CatchUps) -> None:
    """Connect with `?after=0`, read until `synced`, check seq 1..expected, close."""
    started = time.monotonic()
    try:
        ws = await open_socket(f"{url}?after=0", origin, CONNECT_TIMEOUT_S)
    except Exception as error:  # any refusal counts; the message says which
        catch_ups.connect_failures += 1
        catch_ups.connect_error = catch_ups.connect_error or f"{type(error).__name__}: {error}"
        raise Refused from error
    try:
        next_seq, wrong = 1, 0
        while True:
            raw = await ws.recv(decode=False)
            catch_ups.bytes_received += len(raw)
            frame = json.loads(raw)
            kind = frame.get("type")
            if kind == "message":
                catch_ups.messages_received += 1
                seq = frame.get("seq")
                if seq != next_seq:
                    wrong += 1
                    catch_ups.add_problem(f"seq {seq} where {next_seq} was due")
                next_seq = seq + 1 if isinstance(seq, int) else next_seq + 1
            elif kind == "synced":
                if (
                    wrong
                    or next_seq - 1 != catch_ups.expected
                    or frame.get("last_seq") != (catch_ups.expected)
                ):
                    catch_ups.bad += 1
                    catch_ups.add_problem(
                        f"synced at {frame.get('last_seq')} after seq {next_seq - 1}, "
                        f"{wrong} out of order"
                    )
                else:
                    catch_ups.completed += 1
                    catch_ups.durations_s.append(time.monotonic() - started)
                return
            elif kind == "error":
                catch_ups.add_problem(f"error frame: {frame}")
    finally:
        await ws.close()


async def _loop_catch_ups(
    url: str, origin: str | None, catch_ups: CatchUps, conn: Connection
) -> None:
    """Say ready; on "go" loop every client until "stop"; then report what they received."""
    conn.send(("ready", None))
    loop = asyncio.get_running_loop()
    # The parent's commands arrive on a pipe; read them off the event loop's thread.
    if await loop.run_in_executor(None, conn.recv) != "go":
        return

    async def client() -> None:
        while True:
            try:
                await catch_up_once(url, origin, catch_ups)
            except Refused:
                await asyncio.sleep(0.1)  # retry, but not in a hot loop
            except ConnectionClosed as error:
                catch_ups.cut_off += 1
                catch_ups.add_problem(f"closed by the server before `synced`: {error}")

    cpu0, wall0 = time.process_time(), time.monotonic()
    tasks = [asyncio.create_task(client()) for _ in range(catch_ups.clients)]
    await loop.run_in_executor(None, conn.recv)  # "stop"
    catch_ups.cpu_s, catch_ups.wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(("result", catch_ups))


def loader_main(url: str, origin: str | None, catch_ups: CatchUps, conn: Connection) -> None:
    """Entry point of the looping clients' process."""
    run_worker(_loop_catch_ups(url, origin, catch_ups, conn), conn)


# --- the scenario -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """The scenario's sizes: the issue's by default."""

    idle_s: float = IDLE_S
    load_s: float = LOAD_S
    clients: int = LOOPING_CLIENTS
    messages: int = BIG_ROOM_MESSAGES


ISSUE = Knobs()


async def measure(
    base_url: str, origin: str | None, cpu_probe: Callable[[], float], knobs: Knobs = ISSUE
) -> FairnessResult:
    """Seed, then the quiet user alone, then beside the looping clients."""
    idle_s, load_s, clients, messages = knobs.idle_s, knobs.load_s, knobs.clients, knobs.messages
    run_id = secrets.token_hex(4)
    big_url = f"{base_url}/ws/chat/fair_big_{run_id}/"
    quiet_url = f"{base_url}/ws/chat/fair_quiet_{run_id}/"
    result = FairnessResult(big_room_messages=messages)
    # The looping clients' process starts first: its imports overlap the seeding.
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    catch_ups = CatchUps(clients=clients, expected=messages)
    loader = context.Process(
        target=loader_main, args=(big_url, origin, catch_ups, child_end), daemon=True
    )
    loader.start()
    child_end.close()
    loop = asyncio.get_running_loop()
    try:
        started = time.monotonic()
        await seed(big_url, origin, messages)
        result.seed_s = time.monotonic() - started
        progress(
            f"fairness: seeded {messages:,} messages in {result.seed_s:.1f}s; "
            f"quiet user alone for {idle_s:g}s …"
        )
        quiet = await QuietUser.join(quiet_url, origin)
        try:
            cpu0, wall0 = cpu_probe(), time.monotonic()
            result.idle = await quiet.phase(idle_s)
            result.server_cpu_idle = (cpu_probe() - cpu0) / (time.monotonic() - wall0)
            progress(f"fairness: idle {result.idle.describe()}; {clients} clients looping …")
            await loop.run_in_executor(
                None, receive_report, parent_end, time.monotonic() + 60, "ready"
            )
            cpu0, wall0 = cpu_probe(), time.monotonic()
            parent_end.send("go")
            result.loaded = await quiet.phase(load_s)
            parent_end.send("stop")
            result.server_cpu_loaded = (cpu_probe() - cpu0) / (time.monotonic() - wall0)
        finally:
            await quiet.close()
        _, report = await loop.run_in_executor(
            None, receive_report, parent_end, time.monotonic() + 60, "result"
        )
        assert isinstance(report, CatchUps)
        result.catch_ups = report
        loader.join(timeout=10)
    finally:
        stop_worker(loader, parent_end)
    return result


def run_on_project(env: dict[str, str], workdir: Path, knobs: Knobs = ISSUE) -> FairnessResult:
    """The scenario on a fresh daphne process of the project (env from `server_env`)."""
    target = TARGETS["project"]
    try:
        with daphnes(target, env, workdir) as servers:
            warm_up(servers)
            return asyncio.run(measure(servers.urls[0], None, servers.cpu, knobs))
    except (RuntimeError, OSError, TimeoutError, WorkerFailed, WebSocketException) as error:
        progress(f"fairness: FAILED: {error}\n{log_tail(workdir, target.name)}")
        return FairnessResult(error=str(error).splitlines()[0] if str(error) else repr(error))


# --- the report -----------------------------------------------------------------------------


def report(result: FairnessResult) -> list[str]:
    """The section printed after the benchmark table (and by `python -m bench.fairness`)."""
    clients = result.catch_ups.clients if result.catch_ups else LOOPING_CLIENTS
    lines = [
        f"fair catch-up (project, one daphne process, CHAT_LIMITS=off): a quiet user posts every "
        f"{QUIET_INTERVAL_S * 1000:.0f} ms; {clients} clients loop `?after=0` on a room "
        f"of {result.big_room_messages:,} messages"
    ]
    idle, loaded, c = result.idle, result.loaded, result.catch_ups
    if result.error or idle is None or loaded is None or c is None:
        return [*lines, f"  error: {result.error or 'no result'}"]
    mb = c.bytes_received / 1e6
    per = c.bytes_received / max(1, c.messages_received)
    mean = sum(c.durations_s) / len(c.durations_s) if c.durations_s else 0.0
    ratio = result.ratio
    lines += [
        f"  seeded:  {result.big_room_messages:,} posts in {result.seed_s:.1f}s "
        f"({result.big_room_messages / max(result.seed_s, 1e-9):,.0f} posts/s, acked in bursts "
        f"of {SEED_BURST})",
        f"  idle:    quiet ack {idle.describe()} over {idle.seconds:g}s; "
        f"server cpu {_pct(result.server_cpu_idle)}",
        f"  loaded:  quiet ack {loaded.describe()} over {loaded.seconds:g}s; "
        f"server cpu {_pct(result.server_cpu_loaded)}",
        f"  catch-ups: {c.completed} complete ({c.completed / max(c.wall_s, 1e-9):.2f}/s, "
        f"{mean:.2f}s each on average), {c.bad} bad, {c.cut_off} cut off; {mb:.1f} MB sent "
        f"({mb / max(c.wall_s, 1e-9):.1f} MB/s, {per:.0f} bytes/message, "
        f"{c.messages_received / max(c.wall_s, 1e-9):,.0f} messages/s); "
        f"looping clients' cpu {c.cpu_s / max(c.wall_s, 1e-9):.0%}",
        "  ratio:   loaded p50 ÷ idle p50 = "
        + ("-" if ratio is None else f"{ratio:.1f}×")
        + f" (target ≤ {MAX_LOADED_P50_RATIO:g}×)",
    ]
    if c.connect_failures:
        lines.append(f"  {c.connect_failures} handshakes refused ({c.connect_error})")
    lines += [f"  problem: {p}" for p in c.problems]
    return lines


def check(result: FairnessResult) -> tuple[str, bool]:
    """The line for the targets checklist, and whether the target is met."""
    if result.error or result.idle is None or result.loaded is None or not result.catch_ups:
        return (f"fair catch-up: did not run ({result.error or 'no result'})", False)
    ratio = result.ratio
    c = result.catch_ups
    lost = (result.idle.sent - result.idle.acked) + (result.loaded.sent - result.loaded.acked)
    return (
        f"fair catch-up: quiet ack p50 {_ms(result.loaded.quantile_ms(0.5))} ms under "
        f"{c.completed} catch-ups vs {_ms(result.idle.quantile_ms(0.5))} ms idle = "
        + ("-" if ratio is None else f"{ratio:.1f}×")
        + f" (≤ {MAX_LOADED_P50_RATIO:g}), {c.bad} bad catch-ups, {lost} posts unacked",
        result.met,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


# --- the command ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Start Redis, migrate a fresh database, run the scenario on the project, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=IDLE_S, help="seconds of the idle phase")
    parser.add_argument("--load", type=float, default=LOAD_S, help="seconds of the load phase")
    parser.add_argument("--clients", type=int, default=LOOPING_CLIENTS, help="looping clients")
    parser.add_argument("--messages", type=int, default=BIG_ROOM_MESSAGES, help="in the room")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, database)")
    args = parser.parse_args(argv)
    terminate_on_sigterm()
    raise_fd_limit()
    busy_before = busy_cores()
    started_at = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="chat-bench-fair-"))
    try:
        with contextlib.ExitStack() as stack:
            given_redis = os.environ.get("BENCH_REDIS_URL")
            redis_url = given_redis or stack.enter_context(own_redis(workdir))
            env = server_env(redis_url, f"sqlite:///{workdir / 'bench.sqlite3'}")
            if not migrate(env, workdir / "migrate.log"):
                return 1
            knobs = Knobs(args.idle, args.load, args.clients, args.messages)
            result = run_on_project(env, workdir, knobs)
    finally:
        if args.keep:
            progress(f"logs and database kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"machine: {os.cpu_count()} cores; other load: {busy_before:.2f} cores busy in the "
        f"second before the run; took {time.monotonic() - started_at:.0f}s"
    )
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
