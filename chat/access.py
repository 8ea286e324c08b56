"""Who may enter which room, and the event that closes sockets when someone loses that right.

Public rooms (and names no message has created yet) are open to everyone, guests included. A
private room is open to its owner, its members and moderators (people with `chat.moderate`,
and superusers): moderators can read every room's messages in the admin anyway, and they enter
to moderate. Guests never enter a private room. Bans are of accounts: a ban with no room keeps
its person out of every room, one with a room out of that room, until `until` (or for good);
guests have no account to ban and are held by the per-address limits instead.

When someone loses access — a member removed, a ban made, a room made private, an owner
replaced — `on_access_revoked` publishes a `chat.revoke` event to the control group once the
change is committed; every process's hub closes those of the matching sockets that `may_enter`
now refuses, with 4403. Synchronous: async callers run these functions on a database thread.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import PermissionsMixin
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver
from django.utils import timezone

from chat import sql
from chat.models import Ban, Room, RoomMember

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser

    AnyUser = AbstractBaseUser | AnonymousUser | None

logger = logging.getLogger(__name__)

MODERATE_PERMISSION: Final = "chat.moderate"

# Not "chat_…": room groups are "chat_<room name>" (chat/rooms.py), so "chat_control" would be
# the group of a room called "control".
CONTROL_GROUP: Final = "chat.control"
REVOKE_EVENT: Final = "chat.revoke"
# An admin save waits at most this long for the channel layer (Redis down, say).
PUBLISH_TIMEOUT_S: Final = 2.0

Refusal = Literal["banned", "private", "sign_in"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a person may enter a room; if not, a stable `reason` and a human `detail`."""

    allowed: bool
    reason: Refusal | None = None
    detail: str = ""


ALLOWED: Final = Decision(allowed=True)


def may_enter(user: AnyUser, room_name: str) -> Decision:
    """May `user` (None or anonymous: a guest) open `room_name`'s page or socket?"""
    account = _account(user)
    if account is not None:
        ban = _active_ban(account.pk, room_name)
        if ban is not None:
            return Decision(False, "banned", _ban_detail(ban))
    # Plain SQL: every page and handshake asks (chat/sql.py says why).
    rows = sql.fetch(
        f"SELECT id, private, owner_id FROM {sql.table(Room)} WHERE name = %s", [room_name]
    )
    room = rows[0] if rows else None
    if room is None or not room[1]:
        return ALLOWED
    if account is None:
        return Decision(False, "sign_in", "This room is private: sign in to enter it.")
    room_id, _, owner_id = room
    if owner_id == account.pk or is_moderator(account):
        return ALLOWED
    if RoomMember.objects.filter(room_id=room_id, user_id=account.pk).exists():
        return ALLOWED
    return Decision(False, "private", "This room is private: only its members may enter.")


def is_banned(user: AnyUser, room_name: str) -> bool:
    """True if a ban in force keeps `user` out of `room_name` (guests are never banned)."""
    account = _account(user)
    return account is not None and _active_ban(account.pk, room_name) is not None


def is_moderator(user: AnyUser) -> bool:
    """True for superusers and people with the `chat.moderate` permission."""
    return isinstance(user, PermissionsMixin) and user.has_perm(MODERATE_PERMISSION)


def visible_rooms(user: AnyUser) -> QuerySet[Room]:
    """The rooms a directory may list to `user`: those it may enter, bans aside."""
    rooms = Room.objects.all()
    account = _account(user)
    if account is None:
        return rooms.filter(private=False)
    if is_moderator(account):
        return rooms
    member_of = RoomMember.objects.filter(user_id=account.pk).values("room_id")
    return rooms.filter(Q(private=False) | Q(owner_id=account.pk) | Q(pk__in=member_of))


def _account(user: AnyUser) -> AbstractBaseUser | None:
    """The signed-in user, or None for a guest."""
    return user if isinstance(user, AbstractBaseUser) and user.is_authenticated else None


def _active_ban(user_id: int, room_name: str) -> Ban | None:
    return (
        Ban.objects.filter(Q(room__isnull=True) | Q(room__name=room_name), user_id=user_id)
        .filter(Q(until__isnull=True) | Q(until__gt=timezone.now()))
        # A ban for good outlasts any other; then the one that ends last.
        .order_by(F("until").desc(nulls_first=True))
        .select_related("room")
        .first()
    )


def _ban_detail(ban: Ban) -> str:
    where = "this room" if ban.room_id is not None else "every room"
    until = f" until {ban.until:%Y-%m-%d %H:%M} UTC" if ban.until is not None else ""
    reason = f" Reason: {ban.reason}" if ban.reason else ""
    return f"You are banned from {where}{until}.{reason}"


class RevokeEvent(TypedDict):
    """`chat.revoke`: someone lost access; close their sockets that `may_enter` now refuses.

    `user_id` None: anyone in `room` (the room was made private: guests and non-members go,
    members stay). `room` None: every room (a ban everywhere). Never both None. Re-checking
    with `may_enter` before closing also keeps a person who got access back (re-added, ban
    lifted) between the change and the event.
    """

    type: Literal["chat.revoke"]
    user_id: int | None
    room: str | None


@dataclass(frozen=True, slots=True)
class Revoke:
    """A revoke event as the hub reads it."""

    user_id: int | None
    room: str | None


def revoke_event(user_id: int | None, room: str | None) -> RevokeEvent:
    """The event that says `user_id` (None: anyone) lost access to `room` (None: every room)."""
    if user_id is None and room is None:
        raise ValueError("a revoke names a person, a room or both")
    return {"type": REVOKE_EVENT, "user_id": user_id, "room": room}


def read_revoke(event: dict[str, Any]) -> Revoke | None:
    """The revoke an event carries, or None if it is not one (or not well formed)."""
    if event.get("type") != REVOKE_EVENT:
        return None
    user_id, room = event.get("user_id"), event.get("room")
    if not (user_id is None or (isinstance(user_id, int) and not isinstance(user_id, bool))):
        return None
    if not (room is None or isinstance(room, str)) or (user_id is None and room is None):
        return None
    return Revoke(user_id, room)


def on_access_revoked(user_id: int | None, room_name: str | None) -> None:
    """Tell every process to close the sockets of `user_id` (None: anyone) in `room_name`.

    Never raises: an unreachable channel layer must not fail the change that revoked access
    (an admin save, say); it is logged, and the hubs' periodic re-check closes the sockets.
    """
    event = revoke_event(user_id, room_name)

    async def publish() -> None:
        await asyncio.wait_for(
            get_channel_layer().group_send(CONTROL_GROUP, event), PUBLISH_TIMEOUT_S
        )

    try:
        async_to_sync(publish)()
    except Exception:
        logger.warning("could not publish %s", event, exc_info=True)


def _revoke_on_commit(user_id: int | None, room_name: str | None) -> None:
    # After the commit: a hub that re-checks on the event must see the change.
    transaction.on_commit(lambda: on_access_revoked(user_id, room_name))


# An updated row's previous values, kept on the instance by pre_save for post_save: they tell
# who the update shut out.
_BEFORE: Final = "_chat_access_before"
_BEFORE_FIELDS: Final = {Room: ("private", "owner_id"), RoomMember: ("user_id", "room_id")}


@receiver(pre_save, sender=Room)
@receiver(pre_save, sender=RoomMember)
def _remember_before(
    sender: type[Room | RoomMember], instance: Room | RoomMember, **kwargs: Any
) -> None:
    rows = sender._default_manager.filter(pk=instance.pk)
    instance.__dict__[_BEFORE] = (
        rows.values_list(*_BEFORE_FIELDS[sender]).first() if instance.pk is not None else None
    )


@receiver(post_save, sender=Room)
def _room_saved(instance: Room, **kwargs: Any) -> None:
    before: tuple[bool, int | None] | None = instance.__dict__.pop(_BEFORE, None)
    if not instance.private:
        return
    if before is None or not before[0]:
        # Guests and others may sit in it (or in its name, before the room existed).
        _revoke_on_commit(None, instance.name)
    elif before[1] is not None and before[1] != instance.owner_id:
        _revoke_on_commit(before[1], instance.name)


@receiver(post_save, sender=RoomMember)
def _member_saved(instance: RoomMember, **kwargs: Any) -> None:
    before: tuple[int, int] | None = instance.__dict__.pop(_BEFORE, None)
    if before is not None and before != (instance.user_id, instance.room_id):
        _member_left(*before)


@receiver(post_delete, sender=RoomMember)
def _member_deleted(instance: RoomMember, **kwargs: Any) -> None:
    _member_left(instance.user_id, instance.room_id)


def _member_left(user_id: int, room_id: int) -> None:
    room = Room.objects.filter(pk=room_id).values_list("name", "private", "owner_id").first()
    # Membership of a public room, or of one's own, opens nothing.
    if room is not None and room[1] and room[2] != user_id:
        _revoke_on_commit(user_id, room[0])


@receiver(post_save, sender=Ban)
def _ban_saved(instance: Ban, **kwargs: Any) -> None:
    if not instance.is_active():
        return
    if instance.room_id is None:
        _revoke_on_commit(instance.user_id, None)
        return
    room_name = Room.objects.filter(pk=instance.room_id).values_list("name", flat=True).first()
    if room_name is not None:
        _revoke_on_commit(instance.user_id, room_name)
