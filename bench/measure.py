"""Measuring one target: its daphne processes started, warmed up, and each scenario run on them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadclient import Scenario, ScenarioResult, WorkerFailed, run_scenario
from bench.processes import TARGETS, Daphnes, Target, daphnes, log_tail, progress, rss_kib


@dataclass
class Row:
    """One line of the table."""

    scenario: Scenario
    target: str
    result: ScenarioResult | None = None  # the median run by deliveries/s
    runs: list[ScenarioResult] = field(default_factory=list)  # every repeat, median included
    kib_per_connection: float | None = None
    error: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Lost deliveries over every repeat: one bad run is never hidden by the median."""
        return sum(r.lost for r in self.runs)

    @property
    def dupes(self) -> int:
        """Duplicate deliveries over every repeat."""
        return sum(r.dupes for r in self.runs)

    @property
    def order_errors(self) -> int:
        """Order errors over every repeat."""
        return sum(r.order_errors for r in self.runs)

    @property
    def failed(self) -> bool:
        """Lost or misordered deliveries, refused connections, or no result at all."""
        if TARGETS[self.target].loses_by_design:
            return self.result is None
        refused = sum(r.connect_failures for r in self.runs)
        return self.result is None or bool(self.lost or self.dupes or self.order_errors or refused)


@dataclass(frozen=True)
class Options:
    """Command-line choices that apply to every run."""

    client_processes: int
    quiet_s: float
    repeat: int  # runs of each blast scenario; the table shows the median


def warm_up(servers: Daphnes) -> None:
    """One small exchange first: imports, URL resolvers and Redis connections are lazy.

    It also proves the target answers (Origin accepted, route matched) before it is measured.
    """
    check = Scenario("blast", rooms=1, clients=2 * len(servers.ports), messages=10)
    result = run_scenario(check, servers.urls, None, quiet_s=5.0)
    if result.connect_failures or result.lost:
        detail = result.connect_error or f"lost {result.lost} of {result.expected}"
        raise RuntimeError(f"warm-up failed: {detail}")


def run_one(scenario: Scenario, target: Target, servers: Daphnes, options: Options) -> Row:
    """Measure one scenario against running servers."""
    row = Row(scenario, target.name)
    pid = servers.processes[0].pid
    rss: dict[str, int] = {}
    if scenario.kind == "idle":
        rss["before"] = rss_kib(pid)

    def on_connected() -> None:
        if scenario.kind == "idle":
            rss["after"] = rss_kib(pid)

    result = run_scenario(
        scenario,
        servers.urls,
        None,
        processes=options.client_processes,
        quiet_s=options.quiet_s,
        on_connected=on_connected,
        cpu_probe=servers.cpu,
    )
    row.result, row.runs = result, [result]
    if scenario.kind == "idle" and result.connections:
        row.kib_per_connection = (rss["after"] - rss["before"]) / result.connections
        row.notes.append(
            f"daphne VmRSS {rss['before']:,} KiB before, {rss['after']:,} KiB with "
            f"{result.connections:,} connections open"
        )
    return row


def run_repeated(scenario: Scenario, target: Target, servers: Daphnes, options: Options) -> Row:
    """Blast runs last a fraction of a second, so they are repeated and the median is shown."""
    if scenario.kind != "blast" or options.repeat <= 1:
        return run_one(scenario, target, servers, options)
    rows = [run_one(scenario, target, servers, options) for _ in range(options.repeat)]
    runs = [row.result for row in rows if row.result is not None]
    runs.sort(key=lambda r: r.deliveries_per_s)
    rates = ", ".join(f"{r.deliveries_per_s:,.0f}" for r in runs)
    row = Row(scenario, target.name, result=runs[len(runs) // 2], runs=runs)
    row.notes.append(f"deliveries/s of the {len(runs)} runs: {rates}")
    return row


def measure_target(
    target: Target,
    scenarios: Sequence[Scenario],
    env: dict[str, str],
    workdir: Path,
    options: Options,
) -> list[Row]:
    """Every scenario on one target: one server for the traffic runs, a fresh one per idle run
    (memory per connection is only meaningful from a server that has not been loaded yet)."""
    rows: list[Row] = []
    batches: list[list[Scenario]] = []
    traffic = [s for s in scenarios if s.kind != "idle"]
    if traffic:
        batches.append(traffic)
    batches += [[s] for s in scenarios if s.kind == "idle"]
    for batch in batches:
        pending = list(batch)
        try:
            with daphnes(target, env, workdir) as servers:
                warm_up(servers)
                while pending:
                    scenario = pending[0]
                    progress(f"{target.name}: {scenario.name} …")
                    try:
                        row = run_repeated(scenario, target, servers, options)
                    except WorkerFailed as error:
                        row = Row(scenario, target.name, error=str(error))
                    pending.pop(0)
                    rows.append(row)
                    progress(f"{target.name}: {scenario.name}: {summary(row)}")
        except (RuntimeError, OSError, WorkerFailed) as error:
            detail = f"{error}\n{log_tail(workdir, target.name)}"
            progress(f"{target.name}: FAILED: {detail}")
            rows += [Row(s, target.name, error=str(error)) for s in pending]
    return rows


def summary(row: Row) -> str:
    """A progress line for one finished row."""
    r = row.result
    if r is None:
        return f"error: {row.error}"
    return (
        f"{r.deliveries_per_s:,.0f} deliveries/s (median of {len(row.runs)}), lost {row.lost}, "
        f"dupes {row.dupes}, order errors {row.order_errors}"
    )
