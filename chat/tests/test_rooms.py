"""The room-name rule."""

import pytest
from channels.layers import BaseChannelLayer

from chat.rooms import ROOM_NAME_MAX_LENGTH, group_name, is_valid_room_name

VALID = ["lobby", "a", "room_1", "Team-Alpha.v2", "...x", "a" * ROOM_NAME_MAX_LENGTH, "0", "-_."]
INVALID = [
    "",
    ".",
    "..",
    "a" * (ROOM_NAME_MAX_LENGTH + 1),
    "has space",
    "café",
    "a/b",
    "a%20b",
    "emoji👋",
    "tab\t",
    "new\nline",
    "semi;colon",
    "lobby\n",
]


@pytest.mark.parametrize("name", VALID)
def test_valid_names(name: str) -> None:
    assert is_valid_room_name(name)


@pytest.mark.parametrize("name", INVALID)
def test_invalid_names(name: str) -> None:
    assert not is_valid_room_name(name)


@pytest.mark.parametrize("name", VALID)
def test_every_valid_name_makes_a_valid_channels_group(name: str) -> None:
    assert BaseChannelLayer().require_valid_group_name(group_name(name))
