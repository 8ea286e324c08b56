"""The benchmark in one command: project vs the tutorial vs a bare-ASGI ceiling.

    python -m bench.run            # every scenario: tutorial, project, ceiling, project on 2
                                   # processes, project-pg; the fair catch-up; the storm
    python -m bench.run --quick    # the two blasts, project and ceiling only (~20 s)
    python -m bench.run --full     # also the tutorial on RedisChannelLayer, which loses

It starts its own redis-server on a free port (unless BENCH_REDIS_URL is set), migrates a
fresh SQLite database in a temporary directory, runs each target under daphne on a free
127.0.0.1 port, drives it with bench/loadclient.py, stops everything it started, and prints
one table. It exits non-zero if any run lost a message, broke the order, or failed.
docs/benchmarks.md explains the columns and the method.

This module is the plan and the command; the work is done by `bench.processes` (servers and
/proc), `bench.measure` (scenarios on a target), `bench.report` (the table) and
`bench.targets` (the checklist).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import fairness, storm
from bench.loadclient import Scenario, raise_fd_limit
from bench.measure import Options, Row, measure_target
from bench.processes import (
    TARGETS,
    Target,
    busy_cores,
    fresh_postgres_database,
    migrate,
    own_redis,
    progress,
    server_env,
    terminate_on_sigterm,
)
from bench.report import layer_backends, machine_header, notes, table
from bench.targets import STORING_TARGETS, checklist, target_checks

# More than this many cores busy before we start means someone else is using the machine.
BUSY_WARNING_CORES = 0.2

PRESETS = {
    "blast-1x100": "blast:1x100x100",
    "blast-10x10": "blast:10x10x100",
    # 1,000 messages a room: 100,000 deliveries, so that the handshakes and the first frames'
    # warm-up are amortised and server CPU per delivery is the per-post cost (issue 13).
    "blast-1x100x1000": "blast:1x100x1000",
    "blast-10x10x1000": "blast:10x10x1000",
    "paced-1000": "paced:1x1000:2x20",
    "idle-5000": "idle:5000",
}
# Not a load-client scenario: bench/fairness.py, on the project only, reported after the table.
FAIRNESS = "fairness"
# Not a load-client scenario either: bench/storm.py, a reconnect storm of N clients, on each
# storing target chosen (project, project-pg), reported after the table.
STORM = "storm:5000"
DEFAULT_SCENARIOS = [*PRESETS, FAIRNESS, STORM]
DEFAULT_TARGETS = ["tutorial", "project", "ceiling", "limit", "project-2p", "project-pg"]
QUICK_SCENARIOS = ["blast-1x100", "blast-10x10"]
QUICK_TARGETS = ["project", "ceiling"]
FULL_TARGETS = [
    "tutorial",
    "tutorial-rcl",
    "project",
    "ceiling",
    "limit",
    "project-2p",
    "project-pg",
]
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


def parse_storm(spec: str) -> storm.Knobs | None:
    """`storm:CLIENTS` (rooms of 100), or None if `spec` is not a storm."""
    if not spec.startswith("storm:"):
        return None
    m = re.fullmatch(r"storm:(\d+)", spec)
    if not m or int(m.group(1)) % storm.ROOM_SIZE:
        raise ValueError(f"not a storm: {spec!r} (storm:N, N a multiple of {storm.ROOM_SIZE})")
    return storm.Knobs(clients=int(m.group(1)))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Benchmark the chat against the tutorial and a bare ASGI ceiling.",
        epilog=f"scenario presets: {', '.join(f'{k} = {v}' for k, v in PRESETS.items())}; "
        f"{FAIRNESS} = bench/fairness.py on the project (fair catch-up); "
        f"{STORM} = bench/storm.py on project and project-pg (reconnect storm)",
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
        help=f"a preset, {FAIRNESS}, storm:N, or blast:RxCxM, paced:RxC:RATExSECONDS, idle:N "
        "(repeatable)",
    )
    parser.add_argument(
        "--target",
        action="append",
        choices=list(TARGETS),
        help="repeatable; default: tutorial, project, ceiling, limit, project-2p, project-pg",
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


Storms = list[tuple[Target, storm.Knobs]]


def plan(args: argparse.Namespace) -> tuple[list[tuple[Target, list[Scenario]]], bool, Storms]:
    """Which scenarios run on which targets, in order; whether the fair catch-up runs (named
    with --scenario, or by default when the project is a target); which storms on which
    storing targets."""
    default_scenarios = QUICK_SCENARIOS if args.quick else DEFAULT_SCENARIOS
    default_targets = FULL_TARGETS if args.full else DEFAULT_TARGETS
    if args.quick:
        default_targets = QUICK_TARGETS
    specs = args.scenario or default_scenarios
    storm_knobs = [k for k in map(parse_storm, specs) if k is not None]
    scenarios = [parse_scenario(s) for s in specs if s != FAIRNESS and parse_storm(s) is None]
    names = args.target or default_targets
    fair = FAIRNESS in specs and (args.scenario is not None or "project" in names)
    work = []
    for name in names:
        target = TARGETS[name]
        chosen = scenarios
        if target.processes > 1 or target.database != "sqlite":
            # Memory per idle connection depends on neither the processes nor the database.
            chosen = [s for s in scenarios if s.kind in MULTI_PROCESS_KINDS]
        if chosen:
            work.append((target, chosen))
    storms = [
        (TARGETS[name], knobs) for knobs in storm_knobs for name in names if name in STORING_TARGETS
    ]
    return work, fair, storms


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios on the chosen targets and print the table."""
    args = parse_args(argv)
    terminate_on_sigterm()
    raise_fd_limit()
    try:
        work, fair, storms = plan(args)
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
    fair_result: fairness.FairnessResult | None = None
    storm_results: list[storm.StormResult] = []
    try:
        with contextlib.ExitStack() as stack:
            django = fair or bool(storms) or any(target.django for target, _ in work)
            redis_url = given_redis or (stack.enter_context(own_redis(workdir)) if django else "")
            env = server_env(redis_url, f"sqlite:///{workdir / 'bench.sqlite3'}")
            migrated = not django or migrate(env, workdir / "migrate.log")
            envs = {"sqlite": (env, migrated)}
            databases = [t.database for t, _ in work] + [t.database for t, _ in storms]
            if "postgres" in databases:
                pg_env = {**env, "DATABASE_URL": stack.enter_context(fresh_postgres_database())}
                envs["postgres"] = (pg_env, migrate(pg_env, workdir / "migrate-pg.log"))
            modules = dict.fromkeys(target.settings for target, _ in work if target.django)
            backends = layer_backends(env, list(modules))
            for target, scenarios in work:
                target_env, target_migrated = envs[target.database]
                if target.django and not target_migrated:
                    rows += [Row(s, target.name, error="migrate failed") for s in scenarios]
                else:
                    rows += measure_target(target, scenarios, target_env, workdir, options)
            if fair:
                progress("project: fair catch-up …")
                fair_result = (
                    fairness.run_on_project(env, workdir)
                    if migrated
                    else fairness.FairnessResult(error="migrate failed")
                )
            for target, knobs in storms:
                progress(f"{target.name}: reconnect storm of {knobs.clients:,} clients …")
                target_env, target_migrated = envs[target.database]
                storm_results.append(
                    storm.run_on_target(target_env, workdir, knobs, target.name)
                    if target_migrated
                    else storm.StormResult(knobs, target.name, error="migrate failed")
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
    for storm_result in storm_results:
        print()
        print("\n".join(storm.report(storm_result)))
        checks.append(storm.check(storm_result))
    if checks:
        print()
        print(checklist(checks))
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
