"""Rooms and their messages: the source of truth for every client (the channel layer is not)."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from chat.rooms import ROOM_NAME_MAX_LENGTH
from chat.sizes import GUEST_ID_MAX_LENGTH, MAX_CLIENT_ID_CHARS


class Room(models.Model):
    """A chat room; `last_seq` hands out its message sequence numbers."""

    name = models.CharField(max_length=ROOM_NAME_MAX_LENGTH, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The sequence number of the room's latest message. Incremented under the room's row lock
    # (PostgreSQL) or the write lock (SQLite), so sequences are 1, 2, 3… with no gap or repeat.
    last_seq = models.PositiveBigIntegerField(default=0)
    # Public rooms are created by their first message; a private one by its owner, before any
    # message, and only its owner and members (and moderators) may enter it (chat/access.py).
    private = models.BooleanField(
        default=False, help_text="Only the owner, the members and moderators may enter."
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="owned_rooms",
    )

    class Meta:
        ordering = ["name"]
        permissions = [("moderate", "Can ban people and manage rooms")]

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    """One event of a room, numbered within it: a post, or a change to an earlier post.

    Edits and deletes take the room's next sequence number like posts do, so a client that
    resumes after `seq` N is sent every change made since, even to messages at or below N, in
    the order they happened. The post itself always holds its current state (its latest text,
    or none once deleted), which is what history pages show.
    """

    class Kind(models.IntegerChoices):
        MESSAGE = 0, "message"
        EDIT = 1, "edit"
        DELETE = 2, "delete"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveBigIntegerField()
    # Set for signed-in users; guests have only a name, assigned by the server.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="chat_messages",
    )
    author_name = models.CharField(max_length=150)
    # A guest author's id (chat/people.py), which lets them edit and delete their own posts.
    guest_id = models.CharField(max_length=GUEST_ID_MAX_LENGTH, null=True, blank=True)  # noqa: DJ001
    # For a post, its current text ("" once deleted); for an edit, the new text ("" once the
    # post is deleted: a deleted post's words are never sent again); for a delete, "".
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    kind = models.PositiveSmallIntegerField(choices=Kind.choices, default=Kind.MESSAGE)
    # For an edit or a delete: the seq of the post it changes.
    target_seq = models.PositiveBigIntegerField(null=True, blank=True)
    # For a post: when it was last edited, and whether it was deleted.
    edited_at = models.DateTimeField(null=True, blank=True)
    deleted = models.BooleanField(default=False)
    # Chosen by the client so that a resend is recognised rather than stored twice. NULL, not
    # "", when absent: the unique constraint must not treat all id-less posts as one.
    client_id = models.CharField(  # noqa: DJ001
        max_length=MAX_CLIENT_ID_CHARS, null=True, blank=True
    )

    class Meta:
        # By the room's id, not "room" (which sorts by the room's name through a JOIN).
        ordering = ["room_id", "seq"]
        constraints = [
            # Also the index behind "latest N" and "after seq" queries.
            models.UniqueConstraint(fields=["room", "seq"], name="chat_message_room_seq"),
            models.UniqueConstraint(
                fields=["room", "client_id"],
                condition=models.Q(client_id__isnull=False),
                name="chat_message_room_client_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room.name}#{self.seq} {self.author_name}: {self.body[:40]}"


class RoomMember(models.Model):
    """A person let into a private room by its owner (or a moderator)."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="members")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_memberships"
    )
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    added_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["room_id", "added_at"]
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="chat_roommember_room_user"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.room}"


class Ban(models.Model):
    """A person kept out of one room, or of every room, for a while or for good."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_bans"
    )
    room = models.ForeignKey(
        Room,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="bans",
        help_text="Empty: banned from every room.",
    )
    reason = models.CharField(max_length=500, blank=True, help_text="Shown to the person.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    until = models.DateTimeField(null=True, blank=True, help_text="Empty: for good.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.user} banned from {self.room or 'every room'}"

    def is_active(self, now: datetime | None = None) -> bool:
        """True while the ban holds (it has no end, or its end is still to come)."""
        return self.until is None or self.until > (now or timezone.now())
