"""The project's performance targets (docs/benchmarks.md, "Targets"), judged on the table's rows.

Not to be confused with `bench.processes.Target`, a server that is measured.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.loadclient import Scenario
from bench.measure import Row

# Blast ≥ 0.8× the ceiling's deliveries/s, paced p99 ≤ 1.5× the ceiling's, idle ≤ 32 KB
# (32,000 bytes) per connection, two processes ≥ 0.8× one; with nothing lost, duplicated or out
# of order anywhere.
MIN_BLAST_RATIO = 0.8
MAX_PACED_P99_RATIO = 1.5
MAX_IDLE_BYTES_PER_CONNECTION = 32_000
MIN_TWO_PROCESS_RATIO = 0.8
LONG_BLAST_MESSAGES = 1000
# The project on SQLite and on PostgreSQL: each is held to the same targets.
STORING_TARGETS = ("project", "project-pg")
# Issue 13, against the picows broadcaster (the `limit` target) in the same run, with 1,000
# messages a room so that the per-post cost dominates. Rooms of 10 (most chat rooms): server
# CPU per delivery ≤ 2× the limit's and deliveries/s ≥ 0.8× its. A room of 100: deliveries/s
# ≥ the limit's. Idle: ≤ 24 KB per connection, the bare-ASGI ceiling's figure.
SMALL_ROOMS = Scenario("blast", rooms=10, clients=10, messages=1000)
BIG_ROOM = Scenario("blast", rooms=1, clients=100, messages=1000)
MAX_SMALL_ROOMS_CPU_RATIO = 2.0
MIN_SMALL_ROOMS_RATE_RATIO = 0.8
MIN_BIG_ROOM_RATE_RATIO = 1.0
MAX_IDLE_BYTES_PER_CONNECTION_LIMIT = 24_000


def target_checks(rows: Sequence[Row]) -> list[tuple[str, bool]]:
    """Each target of the project that these rows can judge: what it says, and whether met."""
    found = {(row.scenario.name, row.target): row for row in rows if row.result is not None}
    # Two processes against one: judged on the long blasts when the run has them. A blast of
    # 100 messages a room lasts 50–150 ms, and one process's and two processes' medians then
    # differ by a third between runs of the same code (0.61× and 1.03× in one run).
    long_blasts = any(
        row.scenario.kind == "blast" and row.scenario.messages >= LONG_BLAST_MESSAGES
        for row in rows
        if row.target == "project-2p"
    )
    checks = []
    for (name, target), row in found.items():
        if target not in STORING_TARGETS:
            continue
        r = row.result
        assert r is not None
        clean = not row.failed
        label = name if target == "project" else f"{target} {name}"
        ceiling = found.get((name, "ceiling"))
        c = ceiling.result if ceiling is not None else None
        kind = row.scenario.kind
        if kind == "blast" and c is not None:
            ratio = r.deliveries_per_s / c.deliveries_per_s
            checks.append(
                (
                    f"{label}: {ratio:.2f}× the ceiling's deliveries/s (≥ {MIN_BLAST_RATIO}), "
                    f"{row.lost} lost",
                    clean and ratio >= MIN_BLAST_RATIO,
                )
            )
        if kind == "paced" and c is not None and r.p99_ms and c.p99_ms:
            ratio = r.p99_ms / c.p99_ms
            checks.append(
                (
                    f"{label}: p99 {r.p99_ms:.1f} ms = {ratio:.2f}× the ceiling's "
                    f"(≤ {MAX_PACED_P99_RATIO}), {row.lost} lost",
                    clean and ratio <= MAX_PACED_P99_RATIO,
                )
            )
        if kind == "idle" and row.kib_per_connection is not None:
            per_connection = row.kib_per_connection * 1024
            for bound in (MAX_IDLE_BYTES_PER_CONNECTION, MAX_IDLE_BYTES_PER_CONNECTION_LIMIT):
                checks.append(
                    (
                        f"{label}: {per_connection / 1000:.1f} KB per connection "
                        f"(≤ {bound / 1000:.0f} KB)",
                        clean and per_connection <= bound,
                    )
                )
        limit = found.get((name, "limit"))
        if limit is not None:
            checks += limit_checks(label, row, limit)
        two = found.get((name, "project-2p"))
        if (
            target == "project"
            and kind == "blast"
            and two is not None
            and two.result is not None
            and (row.scenario.messages >= LONG_BLAST_MESSAGES or not long_blasts)
        ):
            ratio = two.result.deliveries_per_s / r.deliveries_per_s
            checks.append(
                (
                    f"{name}: two processes {ratio:.2f}× one (≥ {MIN_TWO_PROCESS_RATIO}), "
                    f"{two.lost} lost",
                    not two.failed and ratio >= MIN_TWO_PROCESS_RATIO,
                )
            )
    return checks


def limit_checks(label: str, row: Row, limit: Row) -> list[tuple[str, bool]]:
    """Issue 13's targets for one row of a storing target against the limit's row."""
    r, lim = row.result, limit.result
    if r is None or lim is None or not lim.deliveries_per_s:
        return []
    clean = not row.failed
    rate = r.deliveries_per_s / lim.deliveries_per_s
    checks = []
    if row.scenario == SMALL_ROOMS:
        checks.append(
            (
                f"{label}: {rate:.2f}× the limit's deliveries/s "
                f"(≥ {MIN_SMALL_ROOMS_RATE_RATIO}), {row.lost} lost",
                clean and rate >= MIN_SMALL_ROOMS_RATE_RATIO,
            )
        )
        ours, theirs = r.server_us_per_delivery, lim.server_us_per_delivery
        if ours is not None and theirs:
            cpu = ours / theirs
            checks.append(
                (
                    f"{label}: {ours:.1f} µs server CPU per delivery = {cpu:.2f}× the "
                    f"limit's {theirs:.1f} (≤ {MAX_SMALL_ROOMS_CPU_RATIO:g})",
                    clean and cpu <= MAX_SMALL_ROOMS_CPU_RATIO,
                )
            )
    if row.scenario == BIG_ROOM:
        checks.append(
            (
                f"{label}: {rate:.2f}× the limit's deliveries/s "
                f"(≥ {MIN_BIG_ROOM_RATE_RATIO}), {row.lost} lost",
                clean and rate >= MIN_BIG_ROOM_RATE_RATIO,
            )
        )
    return checks


def checklist(checks: Sequence[tuple[str, bool]]) -> str:
    """The checks as printed under the table: `targets:`, then one `met`/`NOT MET` line each."""
    lines = [f"  {'met    ' if met else 'NOT MET'}  {text}" for text, met in checks]
    return "\n".join(["targets:", *lines])
