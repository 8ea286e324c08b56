"""The fair catch-up's check of each history, against a server that sends faulty ones."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed

from bench import faulty_server
from bench.fairness import CatchUps, catch_up_once


def catch_ups() -> CatchUps:
    """A tally expecting the faulty server's history length."""
    return CatchUps(clients=1, expected=faulty_server.HISTORY_LENGTH)


async def test_a_whole_history_is_a_complete_catch_up() -> None:
    tally = catch_ups()
    async with faulty_server.running() as url:
        await catch_up_once(f"{url}/history/whole/", None, tally)
    assert (tally.completed, tally.bad, tally.problems) == (1, 0, [])
    assert tally.messages_received == faulty_server.HISTORY_LENGTH


@pytest.mark.parametrize("fault", faulty_server.BAD_HISTORIES)
async def test_a_faulty_history_is_a_bad_catch_up(fault: str) -> None:
    tally = catch_ups()
    async with faulty_server.running() as url:
        await catch_up_once(f"{url}/history/{fault}/", None, tally)
    assert (tally.completed, tally.bad) == (0, 1)
    assert tally.problems


async def test_a_history_cut_off_before_synced_is_neither_complete_nor_bad() -> None:
    """The looping client counts it as cut off (`CatchUps.cut_off`) from the exception."""
    tally = catch_ups()
    async with faulty_server.running() as url:
        with pytest.raises(ConnectionClosed):
            await catch_up_once(f"{url}/history/cut/", None, tally)
    assert (tally.completed, tally.bad) == (0, 0)
