"""The post path's SQL: a fixed, small number of queries per batch, and no JOIN."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import services

pytestmark = [pytest.mark.django_db(transaction=True)]


def post(room: str, room_id: int | None, client_id: str | None) -> services.NewPost:
    return services.NewPost(
        room_name=room,
        room_id=room_id,
        author=None,
        author_name="x",
        body="hello",
        client_id=client_id,
    )


def statements(captured: CaptureQueriesContext) -> list[str]:
    """The SQL a block ran, without transaction control (BEGIN, SAVEPOINT…)."""
    control = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE", "ROLLBACK")
    # An executemany is recorded once, as "N times: INSERT …".
    sql = [re.sub(r"^\d+ times: ", "", q["sql"]) for q in captured.captured_queries]
    return [s for s in sql if not s.startswith(control)]


def test_a_batch_in_existing_rooms_takes_four_queries_and_no_join() -> None:
    rooms = [services.room_get_or_create(name=name).pk for name in ("a", "b")]
    batch = [
        post(name, pk, f"{name}{n}")
        for n in range(50)
        for name, pk in zip("ab", rooms, strict=True)
    ]
    batch += [post("a", rooms[0], None)]
    with CaptureQueriesContext(connection) as captured:
        results = services.messages_create(batch)
    assert all(isinstance(r, services.Stored) and r.created for r in results)
    sql = statements(captured)
    # Lock the rooms; look up resends; insert the messages; move the rooms' positions.
    assert [s.split()[0] for s in sql] == ["SELECT", "SELECT", "INSERT", "UPDATE"]
    assert not [s for s in sql if "JOIN" in s.upper()]


def test_a_resend_is_found_without_a_join() -> None:
    room = services.room_get_or_create(name="a").pk
    services.messages_create([post("a", room, "once")])
    with CaptureQueriesContext(connection) as captured:
        (result,) = services.messages_create([post("a", room, "once")])
    assert isinstance(result, services.Stored)
    assert not result.created
    sql = statements(captured)
    assert [s.split()[0] for s in sql] == ["SELECT", "SELECT"]
    assert not [s for s in sql if "JOIN" in s.upper()]


def test_a_rooms_first_message_creates_it_in_the_same_transaction() -> None:
    with CaptureQueriesContext(connection) as captured:
        (result,) = services.messages_create([post("fresh", None, "first")])
    assert isinstance(result, services.Stored)
    assert result.message.seq == 1
    sql = statements(captured)
    assert [s.split()[0] for s in sql] == [
        "SELECT",
        "INSERT",
        "SELECT",
        "SELECT",
        "INSERT",
        "UPDATE",
    ]
    assert not [s for s in sql if "JOIN" in s.upper()]


def test_a_post_for_a_deleted_room_is_refused_alone() -> None:
    gone = services.room_get_or_create(name="gone")
    gone_id = gone.pk
    kept = services.room_get_or_create(name="kept")
    gone.delete()
    results = services.messages_create([post("gone", gone_id, "g"), post("kept", kept.pk, "k")])
    assert results[0] is None
    assert isinstance(results[1], services.Stored)
    assert results[1].message.seq == 1
