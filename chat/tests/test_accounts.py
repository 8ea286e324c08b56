"""Accounts and guests: sign up, sign in, sign out, a guest's rename, CHAT_REQUIRE_LOGIN."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.core import signing
from django.core.exceptions import ValidationError
from django.test import AsyncClient, Client

from chat.people import (
    GUEST_COOKIE,
    SignInRequired,
    person_for,
    validate_guest_name,
)
from chat.testing.ws import ORIGIN, Connect, receive
from mysite.admin_throttle import limiter
from mysite.tests.test_settings import settings_in_fresh_process

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-right-password"


@pytest.fixture
def alice(django_user_model: type[User]) -> User:
    return django_user_model.objects.create_user("alice", password=PASSWORD)


@pytest.fixture
def fresh_counters(settings: Any) -> Iterator[None]:
    """The limits on, counting in this process's memory, new for each test."""
    settings.CHAT_LIMITS_ENABLED = True
    settings.CHAT_LIMITS_STORAGE = "memory://"
    limiter.cache_clear()
    yield
    limiter.cache_clear()


def header(client: Client, path: str = "/chat/lobby/") -> str:
    html = client.get(path).content.decode()
    return html[html.index("<header") : html.index("</header>")]


def rename(client: Client, name: str, next_url: str = "/chat/lobby/") -> Any:
    return client.post("/accounts/guest-name/", {"name": name, "next": next_url})


# --- sign up, sign in, sign out -----------------------------------------------------------------


def test_sign_up_signs_in_and_goes_back_to_the_room(client: Client) -> None:
    page = client.get("/accounts/signup/?next=/chat/lobby/")
    assert page.status_code == 200
    assert 'value="/chat/lobby/"' in page.content.decode()
    response = client.post(
        "/accounts/signup/",
        {"username": "carol", "password1": PASSWORD, "password2": PASSWORD, "next": "/chat/lobby/"},
    )
    assert response.status_code == 302
    assert response["Location"] == "/chat/lobby/"
    assert User.objects.filter(username="carol").exists()
    room = client.get("/chat/lobby/")
    assert room.context["display_name"] == "carol"
    assert not room.context["person"].is_guest
    assert "Signed in as" in header(client)


@pytest.mark.parametrize(
    ("username", "why"),
    [
        ("guest-3fa9c1", "reserved"),
        ("Guest_bob", "reserved"),
        ("admin2", "reserved"),
        ("Sys.Tem", "reserved"),
        ("ALICE", "already exists"),
        ("\u0430lice", "look alike"),
        ("p\u0430ypal", "look alike"),
    ],
)
def test_sign_up_refuses_names_that_pass_for_someone_else(
    client: Client, alice: User, username: str, why: str
) -> None:
    response = client.post(
        "/accounts/signup/", {"username": username, "password1": PASSWORD, "password2": PASSWORD}
    )
    assert response.status_code == 200
    assert why in response.content.decode()
    assert not User.objects.filter(username=username).exists()


def test_sign_in_with_next_and_sign_out_by_post(client: Client, alice: User) -> None:
    page = client.get("/accounts/login/?next=/chat/lobby/")
    assert page.status_code == 200
    wrong = client.post(
        "/accounts/login/", {"username": "alice", "password": "wrong", "next": "/chat/lobby/"}
    )
    assert wrong.status_code == 200
    assert "correct username and password" in wrong.content.decode()
    right = client.post(
        "/accounts/login/", {"username": "alice", "password": PASSWORD, "next": "/chat/lobby/"}
    )
    assert right.status_code == 302
    assert right["Location"] == "/chat/lobby/"
    assert client.get("/chat/lobby/").context["display_name"] == "alice"
    assert client.get("/accounts/logout/").status_code == 405  # no sign-out by a mere link
    out = client.post("/accounts/logout/", {"next": "/chat/lobby/"})
    assert out.status_code == 302
    assert out["Location"] == "/chat/lobby/"
    assert client.get("/chat/lobby/").context["person"].is_guest


def test_sign_in_refuses_a_next_on_another_site(client: Client, alice: User) -> None:
    response = client.post(
        "/accounts/login/",
        {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert response["Location"] == "/chat/"


def test_every_chat_page_says_who_you_are(client: Client, alice: User) -> None:
    guest = header(client)
    assert '<span class="badge" title="Not signed in">guest</span>' in guest
    assert 'href="/accounts/login/?next=/chat/lobby/"' in guest
    assert 'href="/accounts/signup/?next=/chat/lobby/"' in guest
    assert 'id="sign-out"' not in guest
    # The room picker shows the links too (no guest name before a room has given one).
    assert 'id="sign-in"' in header(client, "/chat/")
    client.force_login(alice)
    for path in ("/chat/", "/chat/lobby/"):
        signed_in = header(client, path)
        assert 'Signed in as <strong class="me" id="account-name">alice</strong>' in signed_in
        assert 'id="sign-out"' in signed_in
        assert 'id="sign-in"' not in signed_in


def test_sign_in_failures_share_the_admin_logins_limit(
    client: Client, alice: User, fresh_counters: None, settings: Any
) -> None:
    settings.CHAT_LIMIT_ADMIN_LOGIN = "3/minute"
    for _ in range(3):
        response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert response.status_code == 200
    # Refused before the password is checked, on this form and on the admin's.
    refused = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "Too many failed sign-ins" in refused.content.decode()
    assert (
        client.post("/admin/login/", {"username": "alice", "password": PASSWORD}).status_code == 429
    )


def test_sign_ups_past_an_addresss_rate_are_refused(
    client: Client, fresh_counters: None, settings: Any
) -> None:
    settings.CHAT_LIMIT_SIGNUPS_PER_ADDRESS = "2/hour"
    for name in ("dan", "eve"):
        data = {"username": name, "password1": PASSWORD, "password2": PASSWORD}
        assert Client().post("/accounts/signup/", data).status_code == 302
    data = {"username": "frank", "password1": PASSWORD, "password2": PASSWORD}
    refused = Client().post("/accounts/signup/", data)
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert not User.objects.filter(username="frank").exists()
    other = Client(REMOTE_ADDR="198.51.100.7").post("/accounts/signup/", data)
    assert other.status_code == 302


# --- guest names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("", "blank"),
        ("   ", "blank"),
        ("a", "length"),
        ("x" * 33, "length"),
        ("<b>bob</b>", "characters"),
        ("bob@example", "characters"),
        ("zero\u200bwidth", "characters"),
        ("right\u202eleft", "characters"),
        ("\u0301accent first", "characters"),
        ("...", "characters"),
        ("Admin", "reserved"),
        ("ad.min helper", "reserved"),
        ("ＳＹＳＴＥＭ", "reserved"),  # fullwidth letters fold (NFKC) to the ones they imitate
        ("Moderator Jo", "reserved"),
        ("guest-123abc", "reserved"),
        ("ALICE", "registered"),
        ("\u0430dmin", "confusable"),  # a Cyrillic а: would pass for the reserved "admin"
        ("\u0430lice", "confusable"),  # ...or for the registered "alice"
        ("b\u043eb the builder", "confusable"),  # one mixed word is enough
    ],
)
def test_guest_names_that_are_refused(alice: User, name: str, code: str) -> None:
    with pytest.raises(ValidationError) as refused:
        validate_guest_name(name)
    assert refused.value.code == code


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("Zoë", "Zoë"),
        ("  Bob   Smith ", "Bob Smith"),
        ("tab\tand\nline", "tab and line"),
        ("名前", "名前"),
        ("नमस्ते", "नमस्ते"),
        ("x.y_z-1", "x.y_z-1"),
        ("x" * 32, "x" * 32),
        ("Ｂｏｂ", "Bob"),
        ("Ольга Smith", "Ольга Smith"),  # a Cyrillic word and a Latin one: a real name
    ],
)
def test_guest_names_that_are_accepted(alice: User, name: str, kept: str) -> None:
    assert validate_guest_name(name) == kept


def test_a_guest_renames_and_the_page_shows_the_new_name(client: Client) -> None:
    first = client.get("/chat/lobby/").context["person"]
    response = rename(client, "  Zoë  ")
    assert response.status_code == 302
    assert response["Location"] == "/chat/lobby/"
    assert client.cookies[GUEST_COOKIE]["httponly"]
    page = client.get("/chat/lobby/")
    person = page.context["person"]
    assert person.name == "Zoë"
    assert person.is_guest
    assert person.key == first.key  # the same guest: limits keep counting against them
    assert '<span class="me" id="account-name">Zoë</span>' in page.content.decode()
    assert Session.objects.count() == 0  # a guest's name is a cookie, not a session
    # Back to the automatic name: always theirs, though no one may choose one like it.
    assert rename(client, first.name).status_code == 302
    assert client.get("/chat/lobby/").context["display_name"] == first.name


def test_renames_past_a_guests_rate_are_refused_to_that_guest_alone(
    client: Client, fresh_counters: None, settings: Any
) -> None:
    settings.CHAT_LIMIT_GUEST_RENAMES = "2/minute"
    client.get("/chat/lobby/")
    for name in ("Zoë", "Zed"):
        assert rename(client, name).status_code == 302
    refused = rename(client, "Zara")
    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert client.get("/chat/lobby/").context["display_name"] == "Zed"
    # Another guest, from another address, renames as usual.
    other = Client(REMOTE_ADDR="198.51.100.7")
    other.get("/chat/lobby/")
    assert rename(other, "Zara").status_code == 302


def test_a_refused_rename_says_why_and_keeps_the_name(client: Client, alice: User) -> None:
    name = client.get("/chat/lobby/").context["display_name"]
    response = rename(client, "Alice")
    assert response.status_code == 400
    assert "registered user" in response.content.decode()
    assert client.get("/chat/lobby/").context["display_name"] == name


def test_a_rename_never_redirects_off_the_site(client: Client) -> None:
    client.get("/chat/lobby/")
    assert rename(client, "Zoë", "https://evil.example/")["Location"] == "/chat/"


def test_a_signed_in_user_has_no_guest_name_to_change(client: Client, alice: User) -> None:
    client.force_login(alice)
    assert rename(client, "Zoë")["Location"] == "/chat/lobby/"
    assert client.get("/chat/lobby/").context["display_name"] == "alice"


def test_the_rename_needs_the_csrf_token() -> None:
    client = Client(enforce_csrf_checks=True)
    client.get("/chat/lobby/")
    assert rename(client, "Zoë").status_code == 403
    token = client.cookies["csrftoken"].value
    posted = client.post(
        "/accounts/guest-name/",
        {"name": "Zoë", "next": "/chat/lobby/", "csrfmiddlewaretoken": token},
    )
    assert posted.status_code == 302


def test_the_rename_form_does_not_take_the_tutorials_focus(client: Client) -> None:
    html = client.get("/chat/lobby/").content.decode()
    assert 'id="guest-name-input"' in html
    assert html.count("autofocus") == 1
    assert html.index("autofocus") > html.index('id="chat-message-input"')


def test_a_forged_or_foreign_cookie_is_a_fresh_guest() -> None:
    foreign = signing.TimestampSigner(salt="another.salt").sign_object({"i": "x", "n": "Alice"})
    unsigned = signing.b64_encode(b'{"i":"x","n":"Alice"}').decode()
    for value in ("admin", foreign, unsigned, unsigned + ":abc:def"):
        person = person_for(None, {GUEST_COOKIE: value})
        assert person.new_guest
        assert person.name.startswith("guest-")


def test_a_cookie_from_before_renaming_still_names_its_guest() -> None:
    old = signing.TimestampSigner(salt="chat.people.guest").sign("guest-3fa9c1")
    person = person_for(None, {GUEST_COOKIE: old})
    assert (person.name, person.guest_id, person.new_guest) == (
        "guest-3fa9c1",
        "guest-3fa9c1",
        False,
    )


@pytest.mark.django_db(transaction=True)
async def test_a_renamed_guests_posts_carry_the_new_name(connect: Connect) -> None:
    client = AsyncClient()
    await client.get("/chat/lobby/")
    response = await client.post(
        "/accounts/guest-name/", {"name": "Zoë Renamed", "next": "/chat/lobby/"}
    )
    assert response.status_code == 302
    cookie = f"{GUEST_COOKIE}={client.cookies[GUEST_COOKIE].value}".encode()
    socket = await connect("lobby", headers=[ORIGIN, (b"cookie", cookie)])
    await socket.send_json_to({"message": "renamed", "client_id": "r1"})
    frame = await receive(socket)
    while frame["type"] != "message":
        frame = await receive(socket)
    assert frame["author"] == "Zoë Renamed"


# --- CHAT_REQUIRE_LOGIN ---------------------------------------------------------------------


@pytest.fixture
def login_required(settings: Any) -> None:
    settings.CHAT_REQUIRE_LOGIN = True


@pytest.mark.usefixtures("login_required")
def test_required_login_sends_anonymous_visitors_to_sign_in(client: Client, alice: User) -> None:
    for path in ("/chat/", "/chat/lobby/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"] == f"/accounts/login/?next={path}"
    page = client.get("/accounts/login/?next=/chat/lobby/").content.decode()
    assert "go on as a guest" not in page
    assert GUEST_COOKIE not in client.cookies
    assert client.post("/accounts/guest-name/", {"name": "Zoë"}).status_code == 403
    client.force_login(alice)
    assert client.get("/chat/lobby/").status_code == 200


@pytest.mark.usefixtures("login_required")
def test_required_login_leaves_no_guest_for_a_socket(alice: User) -> None:
    with pytest.raises(SignInRequired):
        person_for(None, {})
    assert person_for(alice, {}).name == "alice"


def test_the_accounts_settings_come_from_the_environment() -> None:
    assert settings_in_fresh_process()["CHAT_REQUIRE_LOGIN"] is False
    built = settings_in_fresh_process(
        CHAT_REQUIRE_LOGIN="1", CHAT_LIMIT_SIGNUPS_PER_ADDRESS="3/hour;10/day"
    )
    assert built["CHAT_REQUIRE_LOGIN"] is True
    assert built["CHAT_LIMIT_SIGNUPS_PER_ADDRESS"] == "3/hour;10/day"
    with pytest.raises(RuntimeError, match="CHAT_REQUIRE_LOGIN"):
        settings_in_fresh_process(CHAT_REQUIRE_LOGIN="maybe")
