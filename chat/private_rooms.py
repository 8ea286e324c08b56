"""Writes: private rooms and their members. The owner manages members on the room's pages,
moderators in the admin; chat/access.py decides who may enter and closes the sockets of
anyone removed.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from chat.models import Room, RoomMember
from chat.rooms import ROOM_NAME_RULE, is_valid_room_name


class PrivateRoomError(ValueError):
    """A request about a private room that cannot be done; the message says why."""


def private_room_create(*, name: str, owner_id: int) -> Room:
    """A new private room called `name`, owned by user `owner_id`; refused if the name is taken."""
    if not is_valid_room_name(name):
        raise PrivateRoomError(ROOM_NAME_RULE)
    try:
        with transaction.atomic():
            return Room.objects.create(name=name, private=True, owner_id=owner_id)
    except IntegrityError:
        raise PrivateRoomError(f"A room called “{name}” already exists.") from None


def member_add(*, room: Room, username: str, added_by_id: int) -> RoomMember:
    """Let the person called `username` into `room` (adding a member twice changes nothing)."""
    User = get_user_model()
    user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
    if user is None:
        raise PrivateRoomError(f"Nobody is called “{username}”.")
    if user.pk == room.owner_id:
        raise PrivateRoomError(f"{username} owns this room.")
    member, _ = RoomMember.objects.get_or_create(
        room=room, user=user, defaults={"added_by_id": added_by_id}
    )
    return member


def member_remove(*, room: Room, user_id: int) -> None:
    """Take a person out of `room`; their sockets in it are closed (chat/access.py)."""
    # A queryset delete still sends post_delete for each row: the signal that closes them.
    RoomMember.objects.filter(room=room, user_id=user_id).delete()
