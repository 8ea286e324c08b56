"""The reconnect storm, tiny and for real: a daphne SIGKILLed and restarted under its clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.storm import Knobs, StormPlan, StormWorker, run_storm
from chat.testing.server import DaphneServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

TINY = Knobs(clients=40, room_size=10, history=20, new_posts=5, processes=2)


@pytest.fixture
def server(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaphneServer]:
    database = tmp_path_factory.mktemp("storm") / "chat.sqlite3"
    daphne = DaphneServer(redis_url=redis_url, database=database).migrate().start()
    yield daphne
    daphne.stop()


def test_every_client_comes_back_with_every_message_once_in_order(server: DaphneServer) -> None:
    result = run_storm(server, TINY)

    assert result.error == ""
    tally = result.tally
    assert tally is not None
    assert (result.joined, tally.clients, tally.converged) == (40, 40, 40)
    assert (tally.missing, tally.dupes, tally.order_errors, tally.error_frames) == (0, 0, 0, 0)
    assert tally.posts_acked == TINY.rooms * TINY.new_posts
    # Each client's return and catch-up were timed, from the new server listening.
    assert len(result.resync_s) == len(result.done_s) == 40
    assert result.clean
    assert result.rss_peak_kib >= result.rss_listening_kib > 0


def test_the_check_counts_what_a_client_holds_wrongly() -> None:
    """Against seq 1…25: a gap, a duplicate and a swapped pair are each counted."""
    rooms = [("a", False), ("b", False), ("c", False), ("d", False)]
    worker = StormWorker(StormPlan("ws://127.0.0.1:1", "x", rooms, history=20, new_posts=5))
    whole = list(range(1, 26))
    gap = [s for s in whole if s != 22]
    dupe = [*whole[:22], 22, *whole[22:]]
    swapped = [*whole[:20], 22, 21, *whole[22:]]
    for client, held in zip(worker.clients, [whole, gap, dupe, swapped], strict=True):
        client.held = held

    tally = worker.summarise()

    assert tally.converged == 1
    assert (tally.missing, tally.dupes, tally.order_errors) == (1, 1, 2)
