"""Sorting py-spy samples into the post path's steps, and sharing out each thread's CPU."""

from __future__ import annotations

import pytest

from bench.profile_post import UNKNOWN, Sample, classify, parse_raw, steps_per_post

AUTOBAHN = "processData (autobahn/websocket/protocol.py:1766)"
EXECUTEMANY = "SQLiteCursorWrapper.executemany (django/db/backends/sqlite3/base.py:371)"
SELECT = "EpollSelector.select (selectors.py:468)"
MAIN = "thread (101): MainThread;run (daphne/server.py:155)"
POOL = "thread (0x66): ThreadPoolExecutor-0_0;_insert_messages (chat/services.py"
RAW = "\n".join(
    [
        f"{MAIN};{AUTOBAHN} 6",
        f"{MAIN};{SELECT} 50",
        f"{POOL}:411);{EXECUTEMANY} 3",
        f"{POOL}:380) 1",
        "not a sample line",
    ]
)


def test_raw_lines_become_samples_with_their_thread() -> None:
    """Decimal or hex thread ids, the thread's name, the frames outermost first, the count."""
    samples = parse_raw(RAW)
    assert [(s.thread, s.name, len(s.frames), s.count) for s in samples] == [
        (101, "MainThread", 2, 6),
        (101, "MainThread", 2, 50),
        (102, "ThreadPoolExecutor-0_0", 2, 3),
        (102, "ThreadPoolExecutor-0_0", 1, 1),
    ]


WRITER = "_write (chat/writer.py:142)"
LOOP = "_run_once (asyncio/base_events.py:1922)"


@pytest.mark.parametrize(
    ("stack", "step"),
    [
        # json is no step: its caller decides.
        (
            [WRITER, "stored_frame (chat/protocol.py:469)", "dumps (json/__init__.py:231)"],
            "encode the stored frame",
        ),
        (
            [LOOP, "parse_client_frame (chat/protocol.py:135)", "loads (json/__init__.py:346)"],
            "parse and validate",
        ),
        ([LOOP, "writeSomeData (twisted/internet/tcp.py:306)"], "write to sockets"),
        ([LOOP, "EpollSelector.select (selectors.py:468)"], None),
    ],
)
def test_the_innermost_frame_that_names_a_step_owns_the_sample(
    stack: list[str], step: str | None
) -> None:
    """Leaf first; a frame no step names defers to its caller; waiting is no step."""
    assert classify(stack) == step


def test_a_stack_no_step_names_is_other() -> None:
    """Counted, never dropped: the table's total stays the measured CPU."""
    assert classify(["<module> (x.py:1)"]) == UNKNOWN


def test_each_threads_cpu_is_shared_out_by_its_samples_and_idle_counts_for_nothing() -> None:
    """6 autobahn samples of 6 busy ones get all of the main thread's 0.3 s; the writer's
    0.2 s splits 3:1; over 10,000 posts."""
    steps = steps_per_post(parse_raw(RAW), {101: 0.3, 102: 0.2}, posts=10_000)
    assert steps == pytest.approx(
        {
            "read frames: autobahn": 30.0,
            "store: SQLite (C)": 15.0,
            "store: Python (services, Django)": 5.0,
        }
    )


def test_a_thread_without_measured_cpu_adds_nothing() -> None:
    """A thread that ended before the window closed has no /proc figure: it counts zero."""
    sample = Sample(7, "gone", ("processData (autobahn/websocket/protocol.py:1766)",), 4)
    assert steps_per_post([sample], {}, posts=1) == {"read frames: autobahn": 0.0}
