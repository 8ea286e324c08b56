"""Account pages: sign up, sign in (throttled like the admin's), sign out, and a guest's rename.

Sign-in failures count against the same per-address and per-username limits as the admin's
login (mysite/admin_throttle.py, CHAT_LIMIT_ADMIN_LOGIN): one password, one budget, whichever
form it is guessed through. Sign-ups are limited per address (CHAT_LIMIT_SIGNUPS_PER_ADDRESS):
each one stores a user and spends a password hash's worth of CPU.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec

from django import forms
from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import RedirectURLMixin, redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.utils.decorators import method_decorator
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST
from django.views.generic import FormView
from limits import parse_many
from limits.errors import StorageError

from chat.people import (
    GUEST_NAME_MAX_LENGTH,
    GUEST_NAME_RULE,
    MIXED_SCRIPTS,
    SignInRequired,
    login_required_for_chat,
    looks_like_guest_or_staff,
    mixes_look_alike_scripts,
    person_for,
    remember_guest,
    rename_guest,
)
from mysite.admin_throttle import identities, limiter, retry_after

logger = logging.getLogger("chat.accounts")

SIGNUP_NAMESPACE = "signup"
RENAME_NAMESPACE = "guest-rename"
P = ParamSpec("P")


def chat_login_required(
    view: Callable[Concatenate[HttpRequest, P], HttpResponse],
) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
    """A chat page: with CHAT_REQUIRE_LOGIN on, anonymous visitors go to sign in first."""

    @functools.wraps(view)
    def page(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        if login_required_for_chat() and not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        return view(request, *args, **kwargs)

    return page


class SignupForm(UserCreationForm):
    """Django's sign-up form; a username may not pass for a guest or for staff."""

    def clean_username(self) -> str:
        """Refuse what UserCreationForm refuses, and names reserved for guests and staff."""
        # Django returns None (its stubs say str) for a name taken already, with the error added.
        username = super().clean_username()
        if username and looks_like_guest_or_staff(username):
            raise ValidationError(
                "That username is reserved (it would look like a guest or the site's staff).",
                code="reserved",
            )
        if username and mixes_look_alike_scripts(username):
            raise ValidationError(MIXED_SCRIPTS, code="confusable")
        return username


@method_decorator([sensitive_post_parameters(), csrf_protect, never_cache], name="dispatch")
class SignupView(RedirectURLMixin, FormView):
    """Create an account, sign in with it, and go back where the visitor came from."""

    form_class = SignupForm
    template_name = "registration/signup.html"
    next_page = settings.LOGIN_REDIRECT_URL

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Refuse an address past its sign-up rate, before any password is hashed."""
        wait = _signup_refused(request)
        if wait is not None:
            return _throttled(self, wait)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: SignupForm) -> HttpResponse:
        """Save the user and sign them in."""
        login(self.request, form.save())
        return HttpResponseRedirect(self.get_success_url())

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        """The form, and where to go after."""
        return super().get_context_data(next=self.get_redirect_url(), **kwargs)


class LoginView(auth_views.LoginView):
    """Django's sign-in page, refusing an address or username that failed too often."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Refuse a throttled attempt with 429 before the password is checked."""
        wait = retry_after(request, request.POST.get("username"))
        if wait is not None:
            return _throttled(self, wait)
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        """LoginView's context, and whether guests may chat (the page offers to go on as one)."""
        return super().get_context_data(guests_allowed=not login_required_for_chat(), **kwargs)


class GuestNameForm(forms.Form):
    """The name a guest asks for (the rules are chat.people.validate_guest_name's)."""

    name = forms.CharField(max_length=GUEST_NAME_MAX_LENGTH * 2, strip=False)


@require_POST
@csrf_protect
def guest_name(request: HttpRequest) -> HttpResponse:
    """Rename the guest behind this browser, then go back to the room they came from."""
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        back = resolve_url("chat:index")
    if request.user.is_authenticated:
        return HttpResponseRedirect(back)  # a signed-in user's name is their username
    try:
        person = person_for(request.user, request.COOKIES)
    except SignInRequired:
        return HttpResponseForbidden("Sign in to chat.\n", content_type="text/plain")
    wait = _refused(
        RENAME_NAMESPACE,
        settings.CHAT_LIMIT_GUEST_RENAMES,
        [("guest", str(person.guest_id)), *identities(request, None)[:1]],
    )
    if wait is not None:
        response = HttpResponse(
            f"Too many renames; try again in {wait} s.\n", content_type="text/plain", status=429
        )
        response["Retry-After"] = str(wait)
        return response
    form = GuestNameForm(request.POST)
    if form.is_valid():
        try:
            renamed = rename_guest(person, form.cleaned_data["name"])
        except ValidationError as error:
            form.add_error("name", error)
        else:
            response = HttpResponseRedirect(back)
            remember_guest(response, request, renamed)
            return response
    context = {
        "form": form,
        "next": back,
        "person": person,
        "rule": GUEST_NAME_RULE,
        "name_max_length": GUEST_NAME_MAX_LENGTH,
    }
    return render(request, "chat/account_guest_name.html", context, status=400)


def _throttled(view: FormView, wait: int) -> HttpResponse:
    """The page again, empty, with a 429: a bound form would check what was sent."""
    form = view.get_form_class()(initial=view.get_initial())
    response = view.render_to_response(view.get_context_data(form=form, throttled=wait), status=429)
    response["Retry-After"] = str(wait)
    return response


def _signup_refused(request: HttpRequest) -> int | None:
    """Count a sign-up attempt against its address; past the limit, the seconds to wait."""
    return _refused(
        SIGNUP_NAMESPACE, settings.CHAT_LIMIT_SIGNUPS_PER_ADDRESS, identities(request, None)[:1]
    )


def _refused(namespace: str, rates: str, keys: list[tuple[str, str]]) -> int | None:
    """Count an attempt against each key; past a limit, the seconds to wait (None: go ahead).

    A counter store that fails lets the attempt through, with a warning, as for logins.
    """
    if not settings.CHAT_LIMITS_ENABLED:
        return None
    counters = limiter(settings.CHAT_LIMITS_STORAGE)
    try:
        for limit in parse_many(rates):
            for key in keys:
                if not counters.hit(limit, namespace, *key):
                    reset = counters.get_window_stats(limit, namespace, *key).reset_time
                    return max(1, math.ceil(reset - time.time()))
    except StorageError as error:
        logger.warning("%s let through unthrottled: %s", namespace, error.storage_error)
    return None
