"""Private-room links below a room's composer: its members page (for its owner), a new one."""

from __future__ import annotations

from typing import Any

from django import template

from chat.models import Room

register = template.Library()


@register.inclusion_tag("chat/private_links.html", takes_context=True)
def private_room_links(context: template.Context, room_name: str) -> dict[str, Any]:
    """For signed-in people: "New private room", and the members page if they own this one."""
    user = context["request"].user
    signed_in = user.is_authenticated
    owner = (
        signed_in and Room.objects.filter(name=room_name, private=True, owner_id=user.pk).exists()
    )
    return {"signed_in": signed_in, "owner": owner, "room_name": room_name}
