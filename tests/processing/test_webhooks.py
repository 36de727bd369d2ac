"""processing.webhooks without Django: the signature, the url policy with allowed networks, the pinned address,
and one deadline for a whole attempt. Receivers are real sockets on loopback, opened to webhooks through
`allowed_networks` as an operator would open an internal network."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_network

import pytest

from processing.sources import SourceNotAllowed
from processing.webhooks import WebhookPolicy, check_url, post, signature, verify_signature
from tests.processing.test_fetch import resolver_of

LOOPBACK = (ip_network("127.0.0.0/8"),)


@contextmanager
def raw_server(handle) -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 running `handle(connection, received)` for each connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(connection, received, stop), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _read_request(connection: socket.socket) -> bytes:
    data = b""
    connection.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        rest += connection.recv(65536)
    return head + b"\r\n\r\n" + rest


def answer_204(connection, received, stop) -> None:
    with connection:
        received.append(_read_request(connection))
        connection.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")


def trickle(connection, received, stop) -> None:
    """A status line, then a header byte every 0.2 s for ever: each read succeeds within the socket's timeout."""
    with connection:
        received.append(_read_request(connection))
        connection.sendall(b"HTTP/1.1 200 OK\r\n")
        while not stop.is_set():
            try:
                connection.sendall(b"X")
            except OSError:
                return
            time.sleep(0.2)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body():
    import hashlib
    import hmac

    body = b'{"events":[]}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("k" * 16, 1700000000, body) == "sha256=" + expected
    assert verify_signature("k" * 16, "1700000000", "sha256=" + expected, body, now=1700000100)
    assert not verify_signature("k" * 16, "1700000000", "sha256=" + expected, body, now=1700001000)  # too old
    for bad_timestamp in ("", "-1", "1e9", "١٧٠٠٠٠٠٠٠٠", "17000000000000"):
        assert not verify_signature("k" * 16, bad_timestamp, "sha256=" + expected, body, now=1700000000)


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "http://localhost/x", "http://10.0.0.1/x",
                                 "http://[fe80::1]/x", "gopher://example.com/"])
def test_private_hosts_and_other_schemes_are_refused_by_default(url):
    with pytest.raises(SourceNotAllowed):
        check_url(url, WebhookPolicy())


def test_allowed_networks_open_those_networks_only():
    policy = WebhookPolicy(allowed_networks=LOOPBACK)
    assert check_url("http://127.0.0.1:9/x", policy) == "127.0.0.1"
    assert check_url("http://localhost:9/x", policy) == "localhost"  # judged by its addresses when sent
    for url in ("http://10.0.0.1/x", "http://[::1]/x", "http://169.254.169.254/"):
        with pytest.raises(SourceNotAllowed):
            check_url(url, policy)


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected():
    calls: list[str] = []
    with raw_server(answer_204) as (port, received):
        policy = WebhookPolicy(allowed_networks=LOOPBACK, resolver=resolver_of({"hooks.test": ["127.0.0.1"]}, calls),
                               timeout=5)
        result = post(f"http://hooks.test:{port}/in?x=1", b"{}", {"X-FFV-Delivery": "d1"}, policy)
    assert (result.ok, result.status) == (True, 204)
    assert calls == ["hooks.test"]
    request = received[0].decode()
    assert request.startswith("POST /in?x=1 HTTP/1.1\r\n")
    assert f"Host: hooks.test:{port}" in request and "X-FFV-Delivery: d1" in request
    assert request.endswith("\r\n\r\n{}")


def test_a_name_resolving_to_a_private_address_is_refused_without_connecting():
    with raw_server(answer_204) as (port, received):
        for addresses in (["10.1.2.3"], ["127.0.0.1", "10.1.2.3"]):  # one private address refuses the name
            policy = WebhookPolicy(allowed_networks=LOOPBACK, resolver=resolver_of({"hooks.test": addresses}))
            result = post(f"http://hooks.test:{port}/in", b"{}", {}, policy)
            assert (result.ok, result.error) == (False, "host not allowed by the url policy")
        result = post(f"http://nowhere.test:{port}/in", b"{}", {},
                      WebhookPolicy(allowed_networks=LOOPBACK, resolver=resolver_of({})))
        assert (result.ok, result.error) == (False, "host cannot be resolved")
    assert received == []


def test_one_deadline_holds_for_the_whole_attempt_against_a_trickling_receiver():
    with raw_server(trickle) as (port, received):
        started = time.monotonic()
        result = post(f"http://127.0.0.1:{port}/in", b"{}", {}, WebhookPolicy(allowed_networks=LOOPBACK,
                                                                              timeout=1.0))
        took = time.monotonic() - started
    assert not result.ok and result.error.startswith(("timed out", "connection failed"))
    assert took < 3.0, took
    assert len(received) == 1


def test_a_refused_connection_is_a_failed_attempt():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    result = post(f"http://127.0.0.1:{port}/in", b"{}", {}, WebhookPolicy(allowed_networks=LOOPBACK, timeout=2))
    assert (result.ok, result.status) == (False, None)
    assert result.error == "connection failed (ConnectionRefusedError)"
