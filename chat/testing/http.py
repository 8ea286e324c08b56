"""GET through the whole ASGI application in-process, as a client at a given address."""

from __future__ import annotations

from asgiref.testing import ApplicationCommunicator


async def asgi_get(
    path: str,
    *,
    client: tuple[str, int] = ("127.0.0.1", 40000),
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, bytes]:
    """(status, body) of `GET path` answered by mysite.asgi.application."""
    from mysite.asgi import application

    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers or [(b"host", b"127.0.0.1:8000")],
        "client": client,
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "http.request", "body": b""})
    start = await communicator.receive_output(5)
    body = await communicator.receive_output(5)
    await communicator.wait()
    return start["status"], body["body"]
