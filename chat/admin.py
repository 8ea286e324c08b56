"""Moderation in the Django admin: rooms and their members, messages, bans.

Saving a ban, or removing a member, closes the person's sockets at once (chat/access.py).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest

from chat.access import is_moderator
from chat.models import Ban, Message, Room, RoomMember


class RoomMemberInline(admin.TabularInline):
    model = RoomMember
    fk_name = "room"
    extra = 0
    autocomplete_fields = ["user"]
    readonly_fields = ["added_by", "added_at"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "private", "owner", "last_seq", "created_at"]
    list_filter = ["private"]
    search_fields = ["name"]
    autocomplete_fields = ["owner"]
    readonly_fields = ["last_seq", "created_at"]
    inlines = [RoomMemberInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Room | None = None) -> Any:
        """A room's name is fixed once it exists: its sockets and pages know it by name."""
        fixed = ["name"] if obj is not None else []
        return [*fixed, *self.readonly_fields]

    def save_formset(
        self, request: HttpRequest, form: ModelForm, formset: BaseInlineFormSet, change: bool
    ) -> None:
        """Record who added each new member."""
        for member in formset.save(commit=False):
            if member.pk is None:
                member.added_by_id = request.user.pk
            member.save()
        for member in formset.deleted_objects:
            member.delete()
        formset.save_m2m()


@admin.register(RoomMember)
class RoomMemberAdmin(admin.ModelAdmin):
    list_display = ["room", "user", "added_by", "added_at"]
    list_filter = ["room__private"]
    search_fields = ["room__name", "user__username"]
    list_select_related = ["room", "user", "added_by"]
    autocomplete_fields = ["room", "user"]
    readonly_fields = ["added_by", "added_at"]

    def save_model(self, request: HttpRequest, obj: RoomMember, form: Any, change: bool) -> None:
        if not change:
            obj.added_by_id = request.user.pk
        super().save_model(request, obj, form, change)


@admin.register(Ban)
class BanAdmin(admin.ModelAdmin):
    list_display = ["user", "room", "reason", "until", "created_by", "created_at", "in_force"]
    list_filter = ["room"]
    search_fields = ["user__username", "room__name", "reason"]
    list_select_related = ["user", "room", "created_by"]
    autocomplete_fields = ["user", "room"]
    readonly_fields = ["created_by", "created_at"]

    @admin.display(boolean=True, description="in force")
    def in_force(self, obj: Ban) -> bool:
        return obj.is_active()

    def save_model(self, request: HttpRequest, obj: Ban, form: Any, change: bool) -> None:
        if not change:
            obj.created_by_id = request.user.pk
        super().save_model(request, obj, form, change)

    # Only moderators change bans, whatever model permissions someone else was given.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_moderator(request.user) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return is_moderator(request.user) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return is_moderator(request.user) and super().has_delete_permission(request, obj)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "seq", "author_name", "short_body", "created_at"]
    list_filter = ["room"]
    search_fields = ["body", "author_name", "room__name"]
    list_select_related = ["room"]
    readonly_fields = ["room", "seq", "author", "author_name", "created_at", "client_id"]
    ordering = ["-created_at"]

    @admin.display(description="message")
    def short_body(self, obj: Message) -> str:
        return obj.body if len(obj.body) <= 80 else obj.body[:79] + "…"
