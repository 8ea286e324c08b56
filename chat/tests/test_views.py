"""The HTTP pages and their tutorial contract."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_root_redirects_to_the_room_picker(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/chat/"


def test_index_has_the_tutorial_elements(client: Client) -> None:
    html = client.get("/chat/").content.decode()
    assert 'id="room-name-input"' in html
    assert 'id="room-name-submit"' in html
    assert 'id="room-rule"' in html  # the rule the page checks before navigating


def test_room_has_the_tutorial_elements(client: Client) -> None:
    response = client.get("/chat/lobby/")
    assert response.status_code == 200
    html = response.content.decode()
    for element_id in ("chat-log", "chat-message-input", "chat-message-submit"):
        assert f'id="{element_id}"' in html
    assert '<script id="room-name" type="application/json">"lobby"</script>' in html


def test_pages_have_no_inline_script_logic(client: Client) -> None:
    for path in ("/chat/", "/chat/lobby/"):
        html = client.get(path).content.decode()
        scripts = html.split("<script")[1:]
        assert scripts
        for script in scripts:
            tag, _, body = script.partition(">")
            assert 'type="application/json"' in tag or 'src="' in tag
            if "src=" in tag:
                assert body.startswith("</script>")


@pytest.mark.parametrize(
    "path",
    [
        "/chat/has%20space/",
        "/chat/caf%C3%A9/",
        "/chat/" + "a" * 65 + "/",
        "/chat/a/b/",
        "/chat/<b>/",
    ],
)
def test_invalid_room_names_get_a_friendly_404(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    html = response.content.decode()
    assert "not a room name" in html
    assert "ASCII letters" in html
    assert "<b>" not in html  # the bad name is escaped, not rendered


def test_static_files_are_served(client: Client) -> None:
    for name in ("room.js", "socket.js", "index.js", "chat.css"):
        response = client.get(f"/static/chat/{name}")
        assert response.status_code == 200, name
        assert b"".join(response.streaming_content)  # type: ignore[attr-defined]
        response.close()
