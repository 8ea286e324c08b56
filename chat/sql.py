"""Plain SQL for the few statements on the hot paths, and what they need from the backend.

The ORM compiles every query it runs: 200–350 µs for a one-row read on the reader thread, 5 ms
of a 12 ms group commit of 100 posts (docs/benchmarks.md). The writer's statements and the reads
every socket makes (its room, its history or catch-up) are therefore written out here, against
the models' own table names; everything else uses the ORM.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.db import connection
from django.db.models import Model


def table(model: type[Model]) -> str:
    """The model's table name, quoted for the database."""
    return connection.ops.quote_name(model._meta.db_table)


def in_list(values: Iterable[Any]) -> tuple[str, list[Any]]:
    """`IN (%s, …)` and its parameters, in a stable order."""
    ordered = sorted(values)
    return f"IN ({', '.join(['%s'] * len(ordered))})", list(ordered)


def aware(moment: datetime | None) -> datetime | None:
    """A timestamp read by plain SQL, in UTC: SQLite's come back naive (the ORM adds the zone)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    """Every row of a query."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()
