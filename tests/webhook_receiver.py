"""A real HTTP receiver of webhook deliveries on loopback, as a test starts it.

It records every request (headers, raw body, when), verifies the signature as a receiver would
(processing.webhooks.verify_signature), drops repeats by `X-FFV-Delivery` (`unique`), and answers by a script: a
function of (delivery id, how many times that id came) giving a status, or `HOLD` to keep the request open until
the test releases it (a delivery in flight when its worker is killed).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from processing.webhooks import verify_signature

HOLD = -1


@dataclass
class Received:
    delivery: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int
    signature_ok: bool

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    secret: str
    url: str = ""
    script: Callable[[str, int], int] = lambda delivery, seen: 200
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accepted(self) -> list[Received]:
        """Requests answered 2xx, in the order they arrived."""
        with self.lock:
            return [item for item in self.requests if 200 <= item.status < 300]

    def unique(self) -> dict[str, Received]:
        """What a receiver keeps: the first accepted request of each delivery id, in arrival order."""
        kept: dict[str, Received] = {}
        for item in self.accepted():
            kept.setdefault(item.delivery, item)
        return kept

    def count(self) -> int:
        with self.lock:
            return len(self.requests)


@contextmanager
def webhook_receiver(secret: str, path: str = "/hook") -> Iterator[Receiver]:
    receiver = Receiver(secret=secret)
    seen: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            delivery = self.headers.get("X-FFV-Delivery", "")
            with receiver.lock:
                seen[delivery] = seen.get(delivery, 0) + 1
                count = seen[delivery]
            status = receiver.script(delivery, count)
            ok = verify_signature(receiver.secret, self.headers.get("X-FFV-Timestamp", ""),
                                  self.headers.get("X-FFV-Signature", ""), body)
            item = Received(delivery, {key: value for key, value in self.headers.items()}, body, time.time(),
                            status, ok)
            if status == HOLD:
                item.status = 0
                with receiver.lock:
                    receiver.requests.append(item)
                receiver.release.wait(120)
                return  # the connection closes without an answer
            with receiver.lock:
                receiver.requests.append(item)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()
