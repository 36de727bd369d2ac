"""The bridge between the event loop and Django (findface_videos.serving), driven with ASGI messages directly.

tests/test_concurrency.py runs the real server; these pin what it is made of: when a request reaches a thread,
what a stalled body turns into, and what the answer looks like on the wire.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
from django.core.exceptions import ImproperlyConfigured

from findface_videos.serving import WebSettings, WSGIBridge, web_settings

SETTINGS = WebSettings(threads=2, header_timeout=1.0, body_timeout=0.3, body_buffer=1000)


def scope(method: str = "GET", path: str = "/videos/", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    return {"type": "http", "http_version": "1.1", "method": method, "scheme": "http", "path": path,
            "raw_path": path.encode(), "query_string": b"a=1", "root_path": "", "headers": headers or [],
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555)}


def body_messages(*chunks: bytes, stall: bool = False):
    """An ASGI receive() giving `chunks` (the last one ends the body unless `stall`), then waiting forever."""
    queue = [{"type": "http.request", "body": chunk, "more_body": stall or index < len(chunks) - 1}
             for index, chunk in enumerate(chunks)]

    async def receive() -> dict:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()  # a client that sends nothing more
        raise AssertionError("unreachable")

    return receive


def run(app, request_scope: dict, receive) -> list[dict]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    bridge = WSGIBridge(app, SETTINGS)
    asyncio.run(asyncio.wait_for(bridge(request_scope, receive, send), 10))
    bridge.pool.shutdown()
    return sent


def answer(sent: list[dict]) -> tuple[int, dict[bytes, bytes], bytes]:
    assert sent[0]["type"] == "http.response.start" and sent[-1]["more_body"] is False
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(message.get("body", b"") for message in sent[1:])


class Closing(list):
    """A WSGI answer that records where and how often it is closed (Django's request_finished runs there)."""

    closed_in: list[str] = []

    def close(self) -> None:
        self.closed_in.append(threading.current_thread().name)


def test_a_long_answer_is_written_in_pieces_and_closed_once_in_a_pool_thread():
    Closing.closed_in = []
    called_in = []

    def app(environ, start_response):
        called_in.append(threading.current_thread().name)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Set-Cookie", " csrftoken=x; Path=/")])
        return Closing([b"a" * 200_000, b"", b"b" * 200_000, b"c" * 200_000])

    sent = run(app, scope(), body_messages(b""))
    status, headers, body = answer(sent)
    assert status == 200 and body == b"a" * 200_000 + b"b" * 200_000 + b"c" * 200_000
    assert headers[b"set-cookie"] == b"csrftoken=x; Path=/"  # (h11 refuses Django's leading space)
    assert b"connection" not in headers  # the connection may be kept alive
    assert len(sent) > 3  # written as it was produced, not as one block
    assert Closing.closed_in and Closing.closed_in == [Closing.closed_in[0]] and called_in[0].startswith("web")


def test_a_small_body_is_read_whole_before_django_sees_the_request():
    seen = []

    def app(environ, start_response):
        seen.append(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
        start_response("201 Created", [])
        return [b""]

    headers = [(b"content-length", b"11"), (b"content-type", b"application/json")]
    status, _, _ = answer(run(app, scope("POST", headers=headers), body_messages(b"hello", b" ", b"world")))
    assert (status, seen) == (201, [b"hello world"])


def test_a_stalled_small_body_never_reaches_django_and_gets_a_408_in_the_error_format():
    def app(environ, start_response):
        raise AssertionError("a request whose body never arrived reached Django")

    headers = [(b"content-length", b"11")]
    status, headers_out, body = answer(run(app, scope("POST", headers=headers), body_messages(b"hello", stall=True)))
    assert status == 408 and headers_out[b"connection"] == b"close"
    assert json.loads(body) == {"code": "BAD_PARAM", "desc": "The request body stopped arriving; send it again.",
                                "param": "", "traceback": ""}


def test_a_small_body_trickled_within_each_timeout_still_gets_a_408_at_the_overall_deadline():
    def app(environ, start_response):
        raise AssertionError("a request whose body never completed reached Django")

    async def trickle() -> dict:
        await asyncio.sleep(SETTINGS.body_timeout / 3)  # each byte well within the per-byte timeout
        return {"type": "http.request", "body": b"x", "more_body": True}

    started = time.monotonic()
    status, headers_out, _ = answer(run(app, scope("POST", headers=[(b"content-length", b"900")]), trickle))
    assert status == 408 and headers_out[b"connection"] == b"close"
    assert time.monotonic() - started < 3 * SETTINGS.body_timeout


def test_a_big_body_is_read_by_the_view_as_it_goes_line_by_line_or_in_blocks():
    lines = []

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        lines.append(stream.readline())
        lines.append(stream.readline(3))
        lines.append(stream.read(5000))
        lines.append(stream.read())
        start_response("201 Created", [])
        return [b""]

    payload = b"first line\n" + b"x" * 3000 + b"\n" + b"y" * 3000
    chunks = [payload[i:i + 700] for i in range(0, len(payload), 700)]
    headers = [(b"content-length", str(len(payload)).encode())]
    status, headers_out, _ = answer(run(app, scope("PUT", headers=headers), body_messages(*chunks)))
    assert status == 201 and b"connection" not in headers_out
    assert lines[0] == b"first line\n" and lines[1] == b"xxx" and b"".join(lines) == payload


def test_a_stalled_big_body_reads_as_a_socket_timeout_and_the_connection_is_closed_after_the_answer():
    errors = []

    def app(environ, start_response):
        try:
            environ["wsgi.input"].read(5000)
        except OSError as exc:  # what the upload view takes for a truncated upload
            errors.append(exc)
        start_response("400 Bad Request", [("Content-Type", "application/json")])
        return [b"{}"]

    headers = [(b"content-length", b"5000")]
    status, headers_out, _ = answer(run(app, scope("PUT", headers=headers), body_messages(b"x" * 1500, stall=True)))
    assert status == 400 and len(errors) == 1 and isinstance(errors[0], TimeoutError)
    # The unread rest of the body must not be taken for the next request.
    assert headers_out[b"connection"] == b"close"


def test_the_environ_is_pep_3333():
    environs = []

    def app(environ, start_response):
        environs.append(environ)
        start_response("204 No Content", [])
        return []

    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"x_forwarded_for", b"6.6.6.6"), (b"accept", b"a"),
               (b"accept", b"b"), (b"cookie", b"a=1"), (b"cookie", b"b=2"), (b"content-type", b"text/plain")]
    assert answer(run(app, scope(path="/videos/é/", headers=headers), body_messages(b"")))[0] == 204
    environ, = environs
    assert environ["PATH_INFO"] == "/videos/é/".encode().decode("latin-1")
    assert environ["QUERY_STRING"] == "a=1" and environ["REQUEST_METHOD"] == "GET"
    assert environ["REMOTE_ADDR"] == "127.0.0.1" and environ["SERVER_PORT"] == "8000"
    # An underscore header would pass for its dashed twin: dropped, as gunicorn drops it.
    assert environ["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"
    assert environ["HTTP_ACCEPT"] == "a,b" and environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["CONTENT_TYPE"] == "text/plain" and "CONTENT_LENGTH" not in environ


@pytest.mark.parametrize("name, raw", [("FFV_WEB_THREADS", "0"), ("FFV_WEB_HEADER_TIMEOUT", "soon"),
                                       ("FFV_WEB_BODY_TIMEOUT", "0"), ("FFV_WEB_BODY_BUFFER", "-1")])
def test_nonsense_web_settings_stop_the_start(monkeypatch, name, raw):
    monkeypatch.setenv(name, raw)
    web_settings.cache_clear()
    try:
        with pytest.raises(ImproperlyConfigured, match=name):
            web_settings()
    finally:
        web_settings.cache_clear()
