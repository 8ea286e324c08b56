"""What a benchmark prints: the machine it ran on, one Markdown table, and notes under it."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from bench.measure import Options, Row
from bench.processes import ROOT

# The versions the header names: what the figures depend on besides the machine.
PACKAGES = (
    "Django",
    "channels",
    "channels-redis",
    "daphne",
    "Twisted",
    "autobahn",
    "redis",
    "websockets",
)


def machine_header(redis_url: str | None, options: Options) -> str:
    """Cores, CPU, memory, Python and package versions: what the figures depend on."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        memory = f"{kib / 2**20:.1f} GiB"
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    redis_version = "?"
    binary = shutil.which("redis-server")
    if binary:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
        if m := re.search(r"v=(\S+)", out):
            redis_version = m.group(1)
    return "\n".join(
        [
            f"machine: {os.cpu_count()} cores ({cpu}), {memory}, "
            f"{platform.system()} {platform.release()}",
            f"python: {platform.python_version()} ({sys.executable})",
            f"packages: {', '.join(versions)}",
            f"redis: redis-server {redis_version}, "
            + (f"BENCH_REDIS_URL={redis_url}" if redis_url else "started on a free port"),
            f"load client: {options.client_processes} process(es), the sender is one of each "
            f"room's clients; blast rows are the median of {options.repeat} runs",
        ]
    )


def layer_backends(env: dict[str, str], modules: Sequence[str]) -> dict[str, str]:
    """The channel-layer backend each settings module configures, as Django reads it."""
    code = "from django.conf import settings; print(settings.CHANNEL_LAYERS['default']['BACKEND'])"
    backends = {}
    for module in modules:
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": module},
            capture_output=True,
            text=True,
        )
        lines = (done.stdout or done.stderr).strip().splitlines()
        backends[module] = lines[-1] if lines else f"exit {done.returncode}"
    return backends


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def vs_ceiling(row: Row, ceiling: Row | None) -> str:
    """Blast: throughput as a fraction of the ceiling's. Paced: p99 as a multiple of the
    ceiling's. Idle: memory per connection as a multiple of the ceiling's."""
    if ceiling is None or row is ceiling or row.result is None or ceiling.result is None:
        return "-"
    r, c = row.result, ceiling.result
    if row.scenario.kind == "blast" and c.deliveries_per_s:
        return f"{r.deliveries_per_s / c.deliveries_per_s:.2f}× rate"
    if row.scenario.kind == "paced" and r.p99_ms and c.p99_ms:
        return f"{r.p99_ms / c.p99_ms:.1f}× p99"
    if row.scenario.kind == "idle" and row.kib_per_connection and ceiling.kib_per_connection:
        return f"{row.kib_per_connection / ceiling.kib_per_connection:.1f}× mem"
    return "-"


HEADINGS = [
    "scenario",
    "target",
    "deliveries/s",
    "server µs/delivery",
    "p50 ms",
    "p99 ms",
    "lost",
    "dupes",
    "order err",
    "vs ceiling",
    "KiB/conn",
    "client cpu",
    "server cpu",
]


def table(rows: Sequence[Row]) -> str:
    """The results as one Markdown table, ready to paste into docs/benchmarks.md."""
    ceilings = {row.scenario: row for row in rows if row.target == "ceiling"}
    lines = []
    for row in rows:
        r = row.result
        if r is None:
            cells = [row.scenario.name, row.target, "error", *["-"] * (len(HEADINGS) - 3)]
        else:
            cells = [
                row.scenario.name,
                row.target,
                f"{r.deliveries_per_s:,.0f}",
                _ms(r.server_us_per_delivery),
                _ms(r.p50_ms),
                _ms(r.p99_ms),
                str(row.lost),
                str(row.dupes),
                str(row.order_errors),
                vs_ceiling(row, ceilings.get(row.scenario)),
                "-" if row.kib_per_connection is None else f"{row.kib_per_connection:.1f}",
                f"{r.client_cpu:.0%}",
                "-" if r.server_cpu is None else f"{r.server_cpu:.0%}",
            ]
        lines.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in lines)) for i, h in enumerate(HEADINGS)]
    numeric = set(range(2, len(HEADINGS)))

    def render(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w - 1) + (":" if i in numeric else "-") for i, w in enumerate(widths)]
    return "\n".join([render(HEADINGS), render(rule), *map(render, lines)])


def notes(rows: Sequence[Row]) -> list[str]:
    """Anything a row's numbers do not say: errors, refused connections, closed sockets."""
    out = []
    for row in rows:
        label = f"{row.scenario.name} / {row.target}"
        r = row.result
        if r is None:
            out.append(f"{label}: {row.error.splitlines()[0] if row.error else 'no result'}")
            continue
        out += [f"{label}: {note}" for note in row.notes]
        refused = sum(run.connect_failures for run in row.runs)
        if refused:
            why = next(run.connect_error for run in row.runs if run.connect_error)
            out.append(f"{label}: {refused} connections refused ({why})")
        closed = sum(run.closed_early for run in row.runs)
        if closed:
            out.append(f"{label}: the server closed {closed} sockets during the run")
        errors = sum(run.error_frames for run in row.runs)
        if errors:
            out.append(f"{label}: {errors} error frames received")
        for run in row.runs:
            planned = run.scenario.messages * run.scenario.rooms
            if run.sent != planned:
                out.append(f"{label}: a run sent {run.sent} of {planned} messages")
    return out
