"""The rooms directory, embedded in the index page so it shows before the first poll."""

from __future__ import annotations

from django import template
from django.utils.html import json_script
from django.utils.safestring import SafeString

from chat.directory import rooms_listing

register = template.Library()


@register.simple_tag(takes_context=True)
def rooms_directory_json(context: template.Context) -> SafeString:
    """The listing `/api/rooms/` would answer now, as a `json_script` block named "rooms-data"."""
    return json_script(rooms_listing(context["request"].user), "rooms-data")
