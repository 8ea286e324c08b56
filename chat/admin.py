"""Moderation in the Django admin."""

from django.contrib import admin

from chat.models import Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "last_seq", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["last_seq", "created_at"]


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
