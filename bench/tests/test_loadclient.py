"""The load client's counting, against a server that loses, duplicates and reorders on purpose."""

from __future__ import annotations

import asyncio

from bench import faulty_server
from bench.loadclient import Scenario, run_scenario
from bench.measure import Row
from bench.report import notes

ROOMS = 2


async def test_the_load_client_reports_exactly_the_faults_the_server_injects() -> None:
    """Each injected fault counted once, in two worker processes and two rooms; nothing else."""
    scenario = Scenario("blast", rooms=ROOMS, clients=5, messages=100)
    async with faulty_server.running() as url:
        result = await asyncio.to_thread(
            run_scenario, scenario, [url], None, processes=2, quiet_s=1.0
        )

    counted = {
        "lost": result.lost,
        "dupes": result.dupes,
        "order_errors": result.order_errors,
        "error_frames": result.error_frames,
    }
    assert counted == {fault: ROOMS * n for fault, n in faulty_server.FAULTS_PER_100.items()}
    assert (result.expected, result.sent, result.connections) == (1000, 200, 10)
    assert (result.connect_failures, result.closed_early) == (0, 0)
    # And the benchmark would call such a run a failure, and say why.
    row = Row(scenario, "project", result=result, runs=[result])
    assert row.failed
    assert notes([row]) == ["blast 2×5×100 / project: 4 error frames received"]
