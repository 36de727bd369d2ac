"""How the API is served: an event loop reads each request, a thread pool runs Django, the loop writes the answer.

gunicorn's sync workers give a connection a whole worker process from accept to the last byte of the answer, so
as many clients as there are workers that connect and send nothing (or half a request line) take the API down.
Here each gunicorn worker process runs one uvicorn event loop (`Worker`) that holds any number of connections
without a thread:

- a connection must deliver a complete request head within `FFV_WEB_HEADER_TIMEOUT` seconds of opening (or of
  its first byte after a kept-alive answer), else it is closed; a kept-alive connection that stays silent is
  closed after `FFV_WEB_KEEPALIVE` seconds;
- a body of up to `FFV_WEB_BODY_BUFFER` bytes (every JSON request) is read whole by the loop before the request
  takes a thread; a larger one (an upload) is read by the view as it consumes it, after it has checked the token,
  the size and the type (so an anonymous client never gets a byte of it written anywhere), and a body that sends
  nothing for `FFV_WEB_BODY_TIMEOUT` seconds reads as a truncated upload;
- Django, unchanged (the WSGI application), runs in a pool of `FFV_WEB_THREADS` threads per process, and the loop
  writes the answer, so a client that does not read its answer holds no thread either.

Django's own ASGI handler is not used: it writes every request body, of any size, to a temporary file before the
view runs (an anonymous client could fill the disk before getting its 401 or 413), and it runs each request in a
new thread, which under persistent database connections leaves one connection per request behind.
"""

from __future__ import annotations

import asyncio
import io
import json
import resource
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn_worker import UvicornWorker

from findface_videos.env import env_float, env_int

# Bytes of answer taken from Django per trip to the thread pool: a whole JSON answer or picture in one trip,
# a static file in a few.
_PULL_BYTES = 256 * 1024


@dataclass(frozen=True)
class WebSettings:
    threads: int
    header_timeout: float
    body_timeout: float
    body_buffer: int


@cache
def web_settings() -> WebSettings:
    return WebSettings(
        threads=env_int("FFV_WEB_THREADS", 8, minimum=1),
        header_timeout=env_float("FFV_WEB_HEADER_TIMEOUT", 10.0, minimum=0.1),
        body_timeout=env_float("FFV_WEB_BODY_TIMEOUT", 60.0, minimum=0.1),
        body_buffer=env_int("FFV_WEB_BODY_BUFFER", 256 * 1024, minimum=0),
    )


class HTTPProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for the request head, and answers to half-closed connections.

    uvicorn times out only a kept-alive connection that is silent after an answer; one that never sends a
    complete request head would be held forever. The head timer runs while h11 waits for a request (`IDLE`) and
    is not already covered by uvicorn's keep-alive timer: from the connection's start, and from the first byte of
    a next request.
    """

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # (cancels uvicorn's keep-alive timer)
        if self.conn.their_state is h11.IDLE:
            if self._head_timer is None:
                self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def eof_received(self) -> bool | None:
        # A client that shuts down its sending side during a request still gets the answer (uvicorn would drop
        # the connection): a body cut short there reads as truncated, and the connection closes after the answer.
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.conn.their_state is h11.IDLE:
            return None
        if cycle.more_body:
            cycle.more_body = False
            cycle.message_event.set()
        cycle.keep_alive = False
        return True

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(web_settings().header_timeout, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class Worker(UvicornWorker):
    """gunicorn worker: one uvicorn event loop per process serving `findface_videos.asgi:application`."""

    CONFIG_KWARGS = {
        "loop": "auto",
        "http": HTTPProtocol,
        "lifespan": "off",
        "ws": "none",
        # REMOTE_ADDR stays the peer's address, as under gunicorn's own workers (no X-Forwarded-For from loopback).
        "proxy_headers": False,
        "server_header": False,
    }

    def init_process(self) -> None:
        # Idle connections now cost a file descriptor each instead of a worker: allow as many as the system does.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            except (ValueError, OSError):
                pass  # a container may forbid it; the limit stays as it was
        super().init_process()


class BodyTimeout(TimeoutError):
    """The client sent no byte of the body for FFV_WEB_BODY_TIMEOUT seconds (an OSError, as a socket timeout is)."""


class RequestBody(io.RawIOBase):
    """`wsgi.input`: the body bytes the loop has buffered, then (in a pool thread) the rest as the view reads it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: Callable[[], Any], expected: bool,
                 timeout: float) -> None:
        super().__init__()
        self._loop = loop
        self._receive = receive
        self._timeout = timeout
        self._buffer = bytearray()
        self.complete = not expected  # the whole body has arrived (or there was none)
        self.disconnected = False

    async def fill(self, limit: int, within: float) -> None:
        """In the loop: buffer the body until it is complete or `limit` bytes are held, all of it in `within`
        seconds (BodyTimeout otherwise)."""
        deadline = self._loop.time() + within
        while not self.complete and not self.disconnected and len(self._buffer) < limit:
            self._buffer += await self._next_chunk(deadline)

    async def _next_chunk(self, deadline: float | None = None) -> bytes:
        timeout = self._timeout if deadline is None else min(self._timeout, deadline - self._loop.time())
        try:
            if timeout <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(self._receive(), timeout)
        except TimeoutError:
            self.disconnected = True  # nothing more is read from this client
            raise BodyTimeout(f"no byte of the request body for {self._timeout:g} s") from None
        if message["type"] == "http.disconnect":
            self.disconnected = True
            return b""
        if not message.get("more_body", False):
            self.complete = True
        return message.get("body", b"")

    def _fetch(self) -> None:
        """In a pool thread: wait for the loop to receive the next chunk (the loop enforces the body timeout)."""
        future = asyncio.run_coroutine_threadsafe(self._next_chunk(), self._loop)
        self._buffer += future.result(timeout=self._timeout + 10)

    def _more_to_come(self) -> bool:
        return not self.complete and not self.disconnected

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        want = sys.maxsize if size is None or size < 0 else size
        while len(self._buffer) < want and self._more_to_come():
            self._fetch()
        return self._take(want)

    def readline(self, size: int | None = -1) -> bytes:
        want = sys.maxsize if size is None or size < 0 else size
        while b"\n" not in self._buffer and len(self._buffer) < want and self._more_to_come():
            self._fetch()
        end = self._buffer.find(b"\n")
        return self._take(min(want, end + 1 if end >= 0 else len(self._buffer)))


@dataclass
class _Answer:
    """What Django answered, taken from it in the pool and written by the loop."""

    status: int = 500
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    iterable: Iterable[bytes] | None = None
    iterator: Iterator[bytes] | None = None
    exhausted: bool = False
    closed: bool = False

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
        # Nothing has been written before the first pull returns, so a later call (with exc_info) simply wins.
        self.status = int(status.split(" ", 1)[0])
        # (Django's Set-Cookie values start with a space, which h11 refuses: WSGI servers strip them.)
        self.headers = [(name.strip().lower().encode("latin-1"), value.strip().encode("latin-1"))
                        for name, value in headers]
        return self._write

    @staticmethod
    def _write(data: bytes) -> None:
        raise NotImplementedError("the write() callable of start_response is not supported")

    def pull(self) -> list[bytes]:
        """In a pool thread: the next chunks of the answer, about _PULL_BYTES; closes the answer at its end."""
        chunks: list[bytes] = []
        size = 0
        assert self.iterator is not None
        for chunk in self.iterator:
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
                if size >= _PULL_BYTES:
                    return chunks
        self.exhausted = True
        self.close()
        return chunks

    def close(self) -> None:
        """Django's request_finished (database connections' housekeeping) runs here."""
        if not self.closed:
            self.closed = True
            close = getattr(self.iterable, "close", None)
            if close is not None:
                close()


class WSGIBridge:
    """ASGI application running a WSGI application in a thread pool once its request is read (see module doc)."""

    def __init__(self, app: Callable, settings: WebSettings | None = None) -> None:
        self.app = app
        self.settings = settings or web_settings()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        # Made on first use, in the worker process (gunicorn forks after importing the application).
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.settings.threads, thread_name_prefix="web")
        return self._pool

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":  # lifespan and websockets are switched off in Worker
            return
        loop = asyncio.get_running_loop()
        headers = dict(scope["headers"])
        length = _content_length(headers.get(b"content-length"))
        expected = bool(length) or b"transfer-encoding" in headers
        body = RequestBody(loop, receive, expected, self.settings.body_timeout)
        if length is not None and 0 < length <= self.settings.body_buffer:
            try:
                # Each byte within the body timeout, and the whole buffered part within it too: a client trickling
                # a byte at a time cannot hold this memory for ever before it is even authenticated.
                await body.fill(length, within=self.settings.body_timeout)
            except BodyTimeout:
                await _timeout_answer(send)
                return
            if body.disconnected:
                return
        answer = _Answer()
        try:
            chunks = await loop.run_in_executor(self.pool, self._start, _environ(scope, body), answer)
            headers_out = answer.headers
            if not body.complete:
                # Unread body bytes would be taken for the next request: close the connection after this answer.
                headers_out = [*headers_out, (b"connection", b"close")]
            await send({"type": "http.response.start", "status": answer.status, "headers": headers_out})
            while True:
                for chunk in chunks:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if answer.exhausted:
                    break
                chunks = await loop.run_in_executor(self.pool, answer.pull)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if not answer.closed and answer.iterable is not None:
                await loop.run_in_executor(self.pool, answer.close)

    def _start(self, environ: dict, answer: _Answer) -> list[bytes]:
        answer.iterable = self.app(environ, answer.start_response)
        answer.iterator = iter(answer.iterable)
        return answer.pull()


def _content_length(raw: bytes | None) -> int | None:
    # h11 has refused a malformed Content-Length already.
    return int(raw) if raw is not None else None


def _environ(scope: dict, body: RequestBody) -> dict[str, Any]:
    """The WSGI environ of an ASGI HTTP scope (PEP 3333: strings are the raw bytes decoded as latin-1)."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client") or ("", 0)
    root_path = scope.get("root_path", "")
    path = scope["path"][len(root_path):] if scope["path"].startswith(root_path) else scope["path"]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root_path.encode().decode("latin-1"),
        "PATH_INFO": path.encode().decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": body,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if "_" in name:
            # As gunicorn does: `X_Forwarded_For` would pass for `X-Forwarded-For` in the environ.
            continue
        value = raw_value.decode("latin-1")
        if name == "content-type":
            key = "CONTENT_TYPE"
        elif name == "content-length":
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        if key in environ:
            value = environ[key] + ("; " if key == "HTTP_COOKIE" else ",") + value
        environ[key] = value
    return environ


# The API's error format (videos.errors), written by the loop: the request never reached Django.
_TIMEOUT_BODY = json.dumps({"code": "BAD_PARAM", "desc": "The request body stopped arriving; send it again.",
                            "param": "", "traceback": ""}).encode()


async def _timeout_answer(send: Callable) -> None:
    await send({"type": "http.response.start", "status": 408,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_TIMEOUT_BODY)),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": _TIMEOUT_BODY, "more_body": False})
