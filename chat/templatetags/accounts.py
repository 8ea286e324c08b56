"""The account corner of every page's header: who you are, and the links to change it."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import json_script
from django.utils.safestring import SafeString

from chat.access import is_moderator
from chat.people import GUEST_NAME_MAX_LENGTH, GUEST_NAME_RULE, SignInRequired, person_for

register = template.Library()


@register.inclusion_tag("chat/account_nav.html", takes_context=True)
def account_nav(context: template.Context, *, rename: bool = False) -> dict[str, Any]:
    """ "Signed in as X · Sign out", or "guest name · Sign in · Sign up" (and a rename form)."""
    request = context["request"]
    person = context.get("person")
    if person is None:
        try:
            person = person_for(request.user, request.COOKIES)
        except SignInRequired:
            person = None
    return {
        "request": request,
        # A visitor who has not been in a room yet has no guest name to show.
        "person": None if person is None or (person.new_guest and not rename) else person,
        "rename": rename,
        "next": request.get_full_path(),
        "name_max_length": GUEST_NAME_MAX_LENGTH,
        "name_rule": GUEST_NAME_RULE,
    }


@register.simple_tag(takes_context=True)
def me_json(context: template.Context) -> SafeString:
    """Who the page is for, as a `json_script` block named "me": own messages, controls."""
    person = context["person"]
    me = {
        "name": person.name,
        "guest": person.is_guest,
        "moderator": is_moderator(context["request"].user),
    }
    return json_script(me, "me")
