"""Remote sources for fetch tests: a public-looking address of the test's own, and HTTP servers that record what
reached them.

`public_address` gives this host a global IPv4 address on an interface of the test's own: one end of a veth pair
(unique names, so parallel runs never collide) carries a random /32 of 192.88.99.0/24. That block is global to
the url policy (Python's `is_global`, which processing.sources uses) and is otherwise unused: it was the 6to4
relay anycast prefix, deprecated by RFC 7526. The test servers bind there; "public" is judged by the real policy,
not by a test switch. Loopback (127.0.0.0/8) stands for the internal service a redirect must not reach. Needs
root (ip link); skips without it, fails under CI=true. The interface goes when the test ends.
"""

from __future__ import annotations

import http.server
import ipaddress
import random
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import requires

PUBLIC_BLOCK = ipaddress.ip_network("192.88.99.0/24")


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


def _addresses_in_use() -> set[str]:
    listed = _ip("-o", "-4", "addr", "show").stdout
    return {word.split("/")[0] for line in listed.splitlines() for word in line.split() if "/" in word}


@pytest.fixture
def public_address() -> Iterator[str]:
    """A global address of 192.88.99.0/24 on this host, on a veth interface of this test's own."""
    requires(shutil.which("ip") is not None, "the `ip` command (iproute2) is needed for a test address")
    name = f"ffv{uuid.uuid4().hex[:8]}"
    made = _ip("link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b")
    requires(made.returncode == 0, f"cannot make a veth pair (root needed): {made.stderr.strip()}")
    try:
        taken = _addresses_in_use()
        address = str(random.choice([str(host) for host in PUBLIC_BLOCK.hosts() if str(host) not in taken]))
        for command in (("link", "set", f"{name}a", "up"), ("link", "set", f"{name}b", "up"),
                        ("addr", "add", f"{address}/32", "dev", f"{name}a")):
            done = _ip(*command)
            requires(done.returncode == 0, f"ip {' '.join(command)}: {done.stderr.strip()}")
        assert ipaddress.ip_address(address).is_global
        yield address
    finally:
        _ip("link", "del", f"{name}a")  # takes its peer and the address with it


# --- servers


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: bool = True  # False: the body ends when the connection closes
    close_at_once: bool = False  # close the connection without an answer
    trickle: float = 0.0  # seconds between 4 KiB pieces of the body (a slow server); 0: all at once


class RecordingServer:
    """A threaded HTTP server on (host, any port) that answers each path with `routes[path]` (404 otherwise) and
    keeps every request path it received, in order, in `requests`."""

    def __init__(self, host: str, routes: dict[str, Answer | Callable[[], Answer]] | None = None) -> None:
        self.routes: dict[str, Answer | Callable[[], Answer]] = dict(routes or {})
        self.requests: list[str] = []
        self.hosts: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                server.hosts.append(self.headers.get("Host", ""))
                route = server.routes.get(self.path)
                answer = route() if callable(route) else route
                if answer is None:
                    answer = Answer(status=404, body=b"no such file")
                if answer.close_at_once:
                    self.close_connection = True
                    return
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.content_length:
                    self.send_header("Content-Length", str(len(answer.body)))
                else:
                    self.close_connection = True
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    if not answer.trickle:
                        self.wfile.write(answer.body)
                    for start in range(0, len(answer.body) if answer.trickle else 0, 4096):
                        self.wfile.write(answer.body[start:start + 4096])
                        self.wfile.flush()
                        time.sleep(answer.trickle)
                except OSError:
                    pass  # the client went (a size cap, a stop)

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def video(self, path: str, file: Path, **kwargs: object) -> None:
        self.routes[path] = Answer(body=file.read_bytes(), headers={"Content-Type": "video/mp4"}, **kwargs)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.routes[path] = Answer(status=status, headers={"Location": location})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RecordingServer]]:
    """serve(host, routes=None) -> a RecordingServer, shut down when the test ends."""
    servers: list[RecordingServer] = []

    def start(host: str, routes: dict[str, Answer | Callable[[], Answer]] | None = None) -> RecordingServer:
        servers.append(RecordingServer(host, routes))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def closed_port(host: str) -> int:
    """A port on `host` that nothing listens on (bound and released: refused until someone takes it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
