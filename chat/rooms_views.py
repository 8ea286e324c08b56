"""Pages of private rooms: create one, manage its members, and the 403 for everyone else."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render, resolve_url
from django.views.decorators.http import require_POST

from chat.access import Decision, may_enter
from chat.models import Room
from chat.private_rooms import PrivateRoomError, member_add, member_remove, private_room_create
from chat.rooms import ROOM_NAME_MAX_LENGTH, ROOM_NAME_RULE

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

    class SignedInRequest(HttpRequest):
        """A request that `login_required` let through."""

        user: AbstractBaseUser  # type: ignore[assignment]


RoomView = Callable[..., HttpResponse]


def room_access_required(view: RoomView) -> RoomView:
    """Wrap a room's view: a person `may_enter` refuses gets the 403 page instead."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, room_name: str, *args: Any, **kwargs: Any) -> HttpResponse:
        decision = may_enter(request.user, room_name)
        if not decision.allowed:
            return forbidden(request, room_name, decision)
        return view(request, room_name, *args, **kwargs)

    return wrapped


def forbidden(request: HttpRequest, room_name: str, decision: Decision) -> HttpResponse:
    """The 403 page: why this person may not enter `room_name`."""
    sign_in = None
    if not request.user.is_authenticated:
        sign_in = (
            f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': request.get_full_path()})}"
        )
    return render(
        request,
        "chat/forbidden.html",
        {"room_name": room_name, "decision": decision, "sign_in_url": sign_in},
        status=403,
    )


class PrivateRoomForm(forms.Form):
    name = forms.CharField(max_length=ROOM_NAME_MAX_LENGTH, help_text=ROOM_NAME_RULE)


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)


@login_required
def private_new(request: SignedInRequest) -> HttpResponse:
    """Create a private room; its owner is then taken to its members page."""
    form = PrivateRoomForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            room = private_room_create(name=form.cleaned_data["name"], owner_id=request.user.pk)
        except PrivateRoomError as error:
            form.add_error("name", str(error))
        else:
            return redirect("chat:private-members", room_name=room.name)
    return render(request, "chat/private_new.html", {"form": form, "room_rule": ROOM_NAME_RULE})


@login_required
def private_members(request: SignedInRequest, room_name: str) -> HttpResponse:
    """The owner's page of a private room's members: add someone by username."""
    room = _owned_room(request, room_name)
    if isinstance(room, HttpResponse):
        return room
    form = MemberForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            member_add(
                room=room, username=form.cleaned_data["username"], added_by_id=request.user.pk
            )
        except PrivateRoomError as error:
            form.add_error("username", str(error))
        else:
            return redirect("chat:private-members", room_name=room.name)
    members = room.members.select_related("user").order_by("added_at")
    return render(
        request,
        "chat/private_members.html",
        {"room": room, "members": members, "form": form},
        status=400 if form.errors else 200,
    )


@login_required
@require_POST
def private_member_remove(request: SignedInRequest, room_name: str) -> HttpResponse:
    """Take a member out of the owner's private room; their sockets in it close at once."""
    room = _owned_room(request, room_name)
    if isinstance(room, HttpResponse):
        return room
    user_id = request.POST.get("user_id", "")
    if user_id.isdigit():
        member_remove(room=room, user_id=int(user_id))
    return redirect("chat:private-members", room_name=room.name)


def _owned_room(request: SignedInRequest, room_name: str) -> Room | HttpResponse:
    """The private room if `request`'s user owns it; otherwise the response to send."""
    room = get_object_or_404(Room, name=room_name, private=True)
    if room.owner_id != request.user.pk:
        reason = "Only the owner of this room manages its members."
        return forbidden(request, room_name, Decision(False, "private", reason))
    return room
