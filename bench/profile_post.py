"""Where a post's server CPU goes: py-spy on the project's daphne over blasts only.

    python -m bench.profile_post                       # 6 blasts of 10×10×1000
    python -m bench.profile_post --scenario blast-1x100x1000 --runs 4 --gil

It starts Redis, a fresh SQLite database and the project under daphne (`CHAT_LIMITS=off`), as
`bench.run` does, warms it up with one unprofiled blast, then for each blast starts
`py-spy record --nonblocking --threads --format raw` once every client is connected and stops
it at the last report, so that no handshake is in the samples. Each thread's CPU over the same
windows comes from /proc/PID/task/TID/stat. py-spy counts a runnable thread, or one in a system
call (an fsync), as busy, so its samples are sorted into the post path's steps (STEPS) and each
thread's steps are scaled to that thread's CPU: the table is µs of CPU per post.
docs/benchmarks.md ("Per-post cost against picows") shows a run and how to read it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadclient import ScenarioResult, run_scenario
from bench.measure import warm_up
from bench.processes import (
    CLOCK_TICKS,
    TARGETS,
    busy_cores,
    daphnes,
    migrate,
    own_redis,
    progress,
    server_env,
)
from bench.run import parse_scenario

# Frames of a thread that is waiting, not working: never a step.
IDLE = ("EpollSelector.select", "(concurrent/futures/thread.py:81)", "Condition.wait")
# (a substring of a frame, the step it means), checked from the innermost frame out: the first
# frame that names a step owns the sample. Order matters where a frame could match two.
STEPS = (
    ("(chat/throttle.py", "limits"),
    ("(chat/metrics.py", "metrics"),
    ("SQLiteCursorWrapper.execute", "store: SQLite (C)"),
    ("._commit (django", "store: SQLite (C)"),
    ("(chat/services.py", "store: Python (services, Django)"),
    ("(chat/sql.py", "store: Python (services, Django)"),
    ("(django/db/", "store: Python (services, Django)"),
    ("(django/utils/timezone", "store: Python (services, Django)"),
    ("(asgiref/", "hop to the database thread"),
    ("(chat/db.py", "hop to the database thread"),
    ("(concurrent/futures/", "hop to the database thread"),
    ("run_in_executor", "hop to the database thread"),
    ("_write_to_self", "hop to the database thread"),
    ("stored_frame", "encode the stored frame"),
    ("message_frame", "encode the stored frame"),
    ("shown_to_tutorial", "encode the stored frame"),
    ("format_time", "encode the stored frame"),
    ("encode (chat/protocol", "encode the stored frame"),
    ("post_settled", "acknowledge"),
    ("(redis/", "publish and receive (Redis)"),
    ("(channels_redis/", "publish and receive (Redis)"),
    ("batch_event", "publish and receive (Redis)"),
    ("_run_publisher", "publish and receive (Redis)"),
    ("_publish (chat/writer", "publish and receive (Redis)"),
    ("(chat/writer.py", "queue and writer task"),
    ("writeSomeData", "write to sockets"),
    ("untilConcludes", "write to sockets"),
    ("_SelectorSocketTransport.write", "write to sockets"),
    ("_PollLikeSelector.modify", "write to sockets"),
    ("FileDescriptor.doWrite", "write to sockets"),
    ("FileDescriptor.write", "write to sockets"),
    ("(chat/transport.py", "hub"),
    ("(chat/fanout.py", "hub"),
    ("ChatConsumer.deliver", "hub"),
    ("(chat/events.py", "hub"),
    ("(chat/protocol.py", "parse and validate"),
    ("ChatConsumer.post", "queue and writer task"),
    ("(chat/consumers.py", "consumer: receive"),
    ("(channels/", "read frames: daphne and Channels"),
    ("(daphne/", "read frames: daphne and Channels"),
    ("(autobahn/", "read frames: autobahn"),
    ("(txaio/", "read frames: autobahn"),
    ("(twisted/", "read frames: Twisted"),
    ("_read_ready", "read frames: Twisted"),
    ("(asyncio/", "event loop"),
)
UNKNOWN = "other"
# How long py-spy is given to attach before the blast starts.
SPY_ATTACH_S = 0.7


@dataclass(frozen=True)
class Sample:
    """Identical stacks of one thread and how many times py-spy saw them."""

    thread: int  # the native thread id, as in /proc/PID/task
    name: str  # the thread's Python name
    frames: tuple[str, ...]  # outermost first
    count: int


_THREAD = re.compile(r"thread \((0x[0-9a-fA-F]+|\d+)\): (.*)")


def parse_raw(text: str) -> list[Sample]:
    """py-spy's `--format raw --threads` output: `thread (TID): NAME;frame;frame COUNT` lines."""
    samples = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        match = _THREAD.match(frames[0]) if frames else None
        if match is None or not count.isdigit():
            continue
        thread, name = int(match.group(1), 0), match.group(2)
        samples.append(Sample(thread, name, tuple(frames[1:]), int(count)))
    return samples


def classify(frames: Sequence[str]) -> str | None:
    """The step a stack is in (None: idle), by its innermost frame that names one."""
    for frame in reversed(frames):
        if any(idle in frame for idle in IDLE):
            return None
        for pattern, step in STEPS:
            if pattern in frame:
                return step
    return UNKNOWN


def steps_per_post(
    samples: Sequence[Sample], thread_cpu_s: dict[int, float], posts: int
) -> dict[str, float]:
    """µs of CPU per post by step: each thread's samples share out that thread's CPU."""
    by_thread: dict[int, Counter[str]] = defaultdict(Counter)
    for sample in samples:
        step = classify(sample.frames)
        if step is not None:
            by_thread[sample.thread][step] += sample.count
    out: dict[str, float] = defaultdict(float)
    for thread, steps in by_thread.items():
        total = sum(steps.values())
        for step, count in steps.items():
            out[step] += 1e6 * thread_cpu_s.get(thread, 0.0) * count / total / posts
    return dict(sorted(out.items(), key=lambda item: -item[1]))


def threads_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of each thread of a process, by native thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="blast-10x10x1000", help="a blast preset or spec")
    parser.add_argument("--runs", type=int, default=6, help="profiled blasts (default 6)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    parser.add_argument("--keep", type=Path, help="copy py-spy's raw output here")
    return parser.parse_args(argv)


@dataclass
class Window:
    """One profiled blast: py-spy from "every client connected" to the last report, and each
    thread's CPU at both ends."""

    command: list[str]
    pid: int
    server_cpu: Callable[[], float]
    spy: subprocess.Popen[bytes] | None = None
    probes: int = 0
    cpu0: dict[int, float] = field(default_factory=dict)
    cpu1: dict[int, float] = field(default_factory=dict)

    def open(self) -> None:
        """The load client's `on_connected`: start py-spy and read each thread's CPU."""
        self.spy = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # py-spy needs a moment to attach; nothing is sent until this returns.
        time.sleep(SPY_ATTACH_S)
        self.cpu0 = threads_cpu(self.pid)

    def probe(self) -> float:
        """The load client's `cpu_probe`: read at "go", then after the last report (the end)."""
        self.probes += 1
        if self.probes == 2:
            self.cpu1 = threads_cpu(self.pid)
            if self.spy is not None:
                self.spy.send_signal(signal.SIGINT)  # py-spy writes its output and exits
        return self.server_cpu()

    def close(self) -> dict[int, float]:
        """Wait for py-spy; each thread's CPU seconds over the window."""
        if self.spy is not None:
            _, errors = self.spy.communicate(timeout=60)
            if self.spy.returncode:
                raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
        return {t: s - self.cpu0.get(t, 0.0) for t, s in self.cpu1.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Profile the project over blasts and print µs of CPU per post by step."""
    args = parse_args(argv)
    scenario = parse_scenario(args.scenario)
    if scenario.kind != "blast":
        print("only blasts are profiled", file=sys.stderr)
        return 2
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("py-spy not found: pip install -r requirements-dev.txt", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="chat-profile-"))
    samples: list[Sample] = []
    cpu: dict[int, float] = defaultdict(float)
    results: list[ScenarioResult] = []
    try:
        with own_redis(workdir) as redis_url:
            env = server_env(redis_url, f"sqlite:///{workdir / 'bench.sqlite3'}")
            if not migrate(env, workdir / "migrate.log"):
                return 1
            with daphnes(TARGETS["project"], env, workdir) as servers:
                pid = servers.processes[0].pid
                warm_up(servers)
                run_scenario(scenario, servers.urls, None, processes=2)
                busy = busy_cores()
                for run in range(args.runs):
                    raw = workdir / f"raw-{run}.txt"
                    command = [spy, "record", "--pid", str(pid), "--nonblocking", "--threads"]
                    command += ["-r", str(args.rate), "--format", "raw", "-o", str(raw)]
                    command += ["--gil"] if args.gil else []
                    window = Window(command, pid, servers.cpu)
                    result = run_scenario(
                        scenario,
                        servers.urls,
                        None,
                        processes=2,
                        on_connected=window.open,
                        cpu_probe=window.probe,
                    )
                    for thread, seconds in window.close().items():
                        cpu[thread] += seconds
                    samples += parse_raw(raw.read_text())
                    results.append(result)
                    progress(
                        f"run {run + 1}: {result.deliveries_per_s:,.0f} deliveries/s, "
                        f"{result.server_us_per_delivery or 0:.1f} server µs/delivery, "
                        f"lost {result.lost}"
                    )
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for raw in workdir.glob("raw-*.txt"):
                shutil.copy(raw, args.keep / raw.name)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    posts = len(results) * scenario.rooms * scenario.messages
    server_s = sum(r.server_cpu_s or 0.0 for r in results)
    names = {sample.thread: sample.name for sample in samples}
    print(
        f"{scenario.name}, {len(results)} runs{' with --gil' if args.gil else ''}, "
        f"{busy:.2f} of {os.cpu_count()} cores busy before: "
        f"{1e6 * server_s / posts:.1f} µs of server CPU per post"
    )
    threads = (f"{names.get(t, t)} {1e6 * s / posts:.1f}" for t, s in cpu.items() if s)
    print(f"per thread, µs per post: {', '.join(threads)}")
    print("\n| step | µs per post |\n|---|---:|")
    for step, us in steps_per_post(samples, dict(cpu), posts).items():
        print(f"| {step} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
