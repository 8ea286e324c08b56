"""Sequence numbers under concurrent writers, each on its own database connection.

Threads here stand for processes: each has its own connection, so the only thing keeping the
sequence gap-free is the database's locking, as between daphne processes. The same tests run on
PostgreSQL (in a child pytest): the server at TEST_POSTGRES_URL, or a private cluster started for
the run (chat/testing/postgres_server.py).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection, connections

from chat import services
from chat.models import Message, Room
from chat.testing.browser import in_ci
from chat.testing.postgres_server import PostgresUnavailable, postgres_url

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 8
PER_WRITER = 25


def post_concurrently(room_id: int, *, with_resends: bool) -> list[BaseException]:
    """WRITERS threads post PER_WRITER messages each (and, optionally, resend each one)."""
    errors: list[BaseException] = []
    start = threading.Barrier(WRITERS)

    def writer(index: int) -> None:
        try:
            start.wait()
            for n in range(PER_WRITER):
                post = functools.partial(
                    services.message_create,
                    room_id=room_id,
                    author=None,
                    author_name=f"w{index}",
                    body=f"{index}:{n}",
                    client_id=f"{index}:{n}",
                )
                post()
                if with_resends:
                    _, created = post()
                    assert not created
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("with_resends", [False, True])
def test_concurrent_writers_get_one_to_n_without_gaps_or_repeats(with_resends: bool) -> None:
    room = services.room_get_or_create(name="contended")
    other = services.room_get_or_create(name="quiet")
    services.message_create(
        room_id=other.pk, author=None, author_name="x", body="x", client_id="0:0"
    )

    assert post_concurrently(room.pk, with_resends=with_resends) == []

    total = WRITERS * PER_WRITER
    rows = list(Message.objects.filter(room=room).values_list("seq", "client_id"))
    assert sorted(seq for seq, _ in rows) == list(range(1, total + 1))
    assert len({client_id for _, client_id in rows}) == total
    assert Room.objects.get(pk=room.pk).last_seq == total
    # Client ids are per room: the other room's "0:0" did not swallow this room's.
    assert Room.objects.get(pk=other.pk).last_seq == 1


@pytest.mark.postgres
def test_durability_suite_on_postgresql() -> None:
    if connection.vendor == "postgresql":
        pytest.skip("already running on PostgreSQL")
    try:
        url = postgres_url()
    except PostgresUnavailable as error:
        if in_ci():
            raise
        pytest.skip(f"no PostgreSQL: {error}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--create-db",
            "chat/tests/test_sequences.py",
            "chat/tests/test_durability.py",
            "chat/tests/test_hostile.py",
            "chat/tests/test_fuzz.py",
            "chat/tests/test_edits.py",
            "-k",
            "not redis",
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
