"""The group commit alone: how long `messages_create` takes for a batch, on SQLite and PostgreSQL.

    python -m bench.batch                    # a fresh SQLite file and a fresh PostgreSQL database
    python -m bench.batch --database sqlite  # one of them

No server, no socket: the writer thread's own cost per batch (locking the rooms, looking up
resends, inserting, moving the rooms' positions, committing), which bounds how many posts per
second one process can store. PostgreSQL is BENCH_DATABASE_URL's server, else the local one or a
private cluster (bench/processes.py `fresh_postgres_database`), with its own durability settings
(`synchronous_commit` on). docs/benchmarks.md ("PostgreSQL") records the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench.processes import ROOT, fresh_postgres_database

SIZES = (1, 10, 100)
ROUNDS = 40


def measure(sizes: Sequence[int], rounds: int) -> list[tuple[int, float]]:
    """In a process whose DATABASE_URL is the database to measure: (size, median seconds)."""
    import django

    django.setup()
    from django.core.management import call_command

    from chat import services

    call_command("migrate", verbosity=0)
    room = services.room_get_or_create(name="bench-batch")
    sequence = iter(range(10**9))
    medians = []
    for size in sizes:
        timings = []
        for _ in range(rounds):
            batch = [
                services.NewPost(
                    room_name=room.name,
                    room_id=room.pk,
                    author=None,
                    author_name="guest-bench",
                    body="a message of an ordinary length, forty-odd characters",
                    client_id=f"post-{next(sequence)}",
                )
                for _ in range(size)
            ]
            started = time.perf_counter()
            services.messages_create(batch)
            timings.append(time.perf_counter() - started)
        medians.append((size, statistics.median(timings)))
    return medians


@contextlib.contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "postgres":
        with fresh_postgres_database() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="chat-batch-") as directory:
            yield f"sqlite:///{Path(directory) / 'batch.sqlite3'}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--database", choices=["sqlite", "postgres"], action="append")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        for size, seconds in measure(SIZES, args.rounds):
            print(f"{size}\t{seconds}")
        return 0
    print("| database | posts per batch | median ms per batch | µs per post |")
    print("|---|---:|---:|---:|")
    for kind in args.database or ["sqlite", "postgres"]:
        with database(kind) as url:
            env = {
                **os.environ,
                "DATABASE_URL": url,
                "DJANGO_SETTINGS_MODULE": "mysite.settings",
                "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-only"),
            }
            done = subprocess.run(
                [sys.executable, "-m", "bench.batch", "--child", "--rounds", str(args.rounds)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
        for line in done.stdout.split("\n"):
            if line.strip():
                posts, elapsed = line.split("\t")
                ms = float(elapsed) * 1000
                print(f"| {kind} | {posts} | {ms:.2f} | {ms * 1000 / int(posts):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
