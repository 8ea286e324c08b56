"""Issue 13's targets against the picows `limit`, and server CPU per delivery, on made-up rows."""

from __future__ import annotations

import sys

from bench.loadclient import Scenario, ScenarioResult
from bench.measure import Row
from bench.processes import TARGETS
from bench.report import table
from bench.targets import BIG_ROOM, SMALL_ROOMS, target_checks


def result(
    scenario: Scenario, rate: float, cpu_s: float | None, *, lost: int = 0
) -> ScenarioResult:
    """A clean run of `scenario` at `rate` deliveries/s using `cpu_s` server CPU seconds."""
    expected = scenario.rooms * scenario.clients * scenario.messages
    return ScenarioResult(
        scenario=scenario,
        connections=scenario.rooms * scenario.clients,
        expected=expected,
        received=expected - lost,
        dupes=0,
        order_errors=0,
        sent=scenario.rooms * scenario.messages,
        p50_ms=1.0,
        p99_ms=2.0,
        deliveries_per_s=rate,
        connect_failures=0,
        connect_error="",
        closed_early=0,
        error_frames=0,
        client_cpu=0.5,
        client_cpu_s=1.0,
        server_cpu=1.0,
        processes=2,
        server_cpu_s=cpu_s,
    )


def row(scenario: Scenario, target: str, rate: float, cpu_s: float | None, lost: int = 0) -> Row:
    run = result(scenario, rate, cpu_s, lost=lost)
    return Row(scenario, target, result=run, runs=[run])


def test_server_cpu_per_delivery_is_cpu_seconds_over_deliveries() -> None:
    """100,000 deliveries in 1.4 CPU seconds: 14 µs each; no probe, no figure."""
    assert result(SMALL_ROOMS, 1.0, 1.4).server_us_per_delivery == 14.0
    assert result(SMALL_ROOMS, 1.0, None).server_us_per_delivery is None


def test_small_rooms_are_held_to_the_limits_cpu_and_rate() -> None:
    """14 µs against 2.7 µs is 5.19×, not met; 66k against 137k is 0.48×, not met."""
    rows = [row(SMALL_ROOMS, "project", 66_000, 1.4), row(SMALL_ROOMS, "limit", 137_000, 0.27)]
    assert target_checks(rows) == [
        ("blast 10×10×1000: 0.48× the limit's deliveries/s (≥ 0.8), 0 lost", False),
        (
            "blast 10×10×1000: 14.0 µs server CPU per delivery = 5.19× the limit's 2.7 (≤ 2)",
            False,
        ),
    ]
    rows = [row(SMALL_ROOMS, "project", 120_000, 0.5), row(SMALL_ROOMS, "limit", 137_000, 0.27)]
    assert [met for _, met in target_checks(rows)] == [True, True]


def test_a_big_room_is_held_to_the_limits_rate_and_a_loss_fails_it() -> None:
    """≥ 1.0× the limit's deliveries/s, with nothing lost."""
    limit = row(BIG_ROOM, "limit", 100_000, 0.4)
    assert target_checks([row(BIG_ROOM, "project", 100_000, 0.5), limit]) == [
        ("blast 1×100×1000: 1.00× the limit's deliveries/s (≥ 1.0), 0 lost", True)
    ]
    lossy = row(BIG_ROOM, "project", 120_000, 0.5, lost=1)
    assert target_checks([lossy, limit]) == [
        ("blast 1×100×1000: 1.20× the limit's deliveries/s (≥ 1.0), 1 lost", False)
    ]


def test_other_scenarios_and_targets_are_not_held_to_the_limit() -> None:
    """The limit's targets are for the 1,000-message blasts of the storing targets only."""
    short = Scenario("blast", rooms=10, clients=10, messages=100)
    rows = [row(short, "project", 1.0, 1.0), row(short, "limit", 9.0, 0.1)]
    rows += [row(SMALL_ROOMS, "ceiling", 1.0, 1.0), row(SMALL_ROOMS, "limit", 9.0, 0.1)]
    assert target_checks(rows) == []


def test_the_table_shows_server_cpu_per_delivery_beside_deliveries() -> None:
    """A column of its own, after deliveries/s."""
    heading, _, line = table([row(SMALL_ROOMS, "limit", 137_000, 0.27)]).splitlines()
    assert [c.strip() for c in heading.split("|")][3:5] == ["deliveries/s", "server µs/delivery"]
    assert [c.strip() for c in line.split("|")][3:5] == ["137,000", "2.7"]


def test_the_limit_runs_its_own_command_and_daphne_targets_run_daphne() -> None:
    """The port goes where the target's argv says; the others are daphne serving their app."""
    assert TARGETS["limit"].command(8123) == [
        sys.executable,
        "-m",
        "bench.picows_broadcaster",
        "--host",
        "127.0.0.1",
        "--port",
        "8123",
    ]
    assert TARGETS["project"].command(8123) == [
        sys.executable,
        *("-m", "daphne", "-e", "tcp:port=8123:interface=127.0.0.1:backlog=4096"),
        "mysite.asgi:application",
    ]
