"""Signing and posting one webhook delivery, every connection checked against the url policy. No Django here.

A delivery is one POST of a JSON body. Its signature is HMAC-SHA256, keyed with the subscription's secret, over
`<timestamp>.<body>` (the timestamp is the `X-FFV-Timestamp` header, Unix seconds of this attempt; the body the
exact bytes sent), sent as `X-FFV-Signature: sha256=<hex>`. A receiver recomputes it over the raw body, compares
in constant time and refuses timestamps older than a few minutes (replays); `verify_signature` does all of that.

The URL policy is the one of archive sources (processing.sources): http/https only, allowed hosts, no private,
loopback or link-local address unless allowed. The host is resolved once per attempt, every address it resolves
to checked, and the connection made to a checked address (processing.fetch's pinned connections; TLS verifies
the certificate against the host name). Redirects are never followed: a 3xx is a failed attempt, so a receiver
cannot send the delivery anywhere the policy did not check. The whole attempt (connect, send, the answer's
status line and headers) has one deadline, `timeout`; the answer's body is not read.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from processing.fetch import PinnedHTTPConnection, PinnedHTTPSConnection, url_for_log
from processing.sources import Network, Resolver, SourceNotAllowed, allowed_addresses, check_source_url

logger = logging.getLogger(__name__)

USER_AGENT = "findface-videos-webhooks"
SIGNATURE_PREFIX = "sha256="
# How old a timestamp verify_signature accepts by default (seconds, either way).
DEFAULT_TOLERANCE = 300


@dataclass(frozen=True)
class WebhookPolicy:
    """Where a delivery may connect, and how long an attempt may take."""

    allowed_hosts: tuple[str, ...] = ()  # empty: any host the address policy allows
    allow_private: bool = False  # any private, loopback and link-local address
    allowed_networks: tuple[Network, ...] = ()  # these private networks only
    timeout: float = 10.0  # seconds for the whole attempt
    resolver: Resolver = socket.getaddrinfo
    ssl_context: ssl.SSLContext | None = None  # None: the system's CAs, host name checked


@dataclass(frozen=True)
class PostResult:
    """How an attempt ended: `ok` for a 2xx; `status` the HTTP status when one came; `error` a short text for
    operators (never the answer's body)."""

    ok: bool
    status: int | None = None
    error: str = ""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 keyed with `secret` over `<timestamp>.<body>`."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(secret: str, timestamp: str, signature_header: str, body: bytes, *,
                     tolerance: float = DEFAULT_TOLERANCE, now: float | None = None) -> bool:
    """What a receiver does with a delivery: the timestamp is recent and the signature is that of the body."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, int(timestamp), body), signature_header)


def check_url(url: str, policy: WebhookPolicy) -> str:
    """The URL's host if the policy allows the URL as written (no resolution); raises SourceNotAllowed."""
    return check_source_url(url, allowed_hosts=list(policy.allowed_hosts), allow_private=policy.allow_private,
                            resolve=False, allowed_networks=policy.allowed_networks)


def post(url: str, body: bytes, headers: dict[str, str], policy: WebhookPolicy) -> PostResult:
    """POST `body` to `url` on a connection to an address the policy allows; never raises for the network."""
    deadline = time.monotonic() + policy.timeout
    parts = urlsplit(url)
    try:
        host = check_url(url, policy)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = allowed_addresses(host, port, allow_private=policy.allow_private, resolver=policy.resolver,
                                      allowed_networks=policy.allowed_networks)
    except SourceNotAllowed as exc:
        reason = "cannot be resolved" if exc.reason == "unresolvable" else "not allowed by the url policy"
        return PostResult(False, None, f"host {reason}")
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    sent = {"User-Agent": USER_AGENT, "Content-Type": "application/json", "Accept": "*/*",
            "Content-Length": str(len(body)), **headers}
    failure = "connection failed"
    for address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            return PostResult(False, None, "timed out")
        if parts.scheme == "https":
            context = policy.ssl_context or ssl.create_default_context()
            connection: http.client.HTTPConnection = PinnedHTTPSConnection(host, port, address, left, context)
        else:
            connection = PinnedHTTPConnection(host, port, address, left)
        # One deadline for the attempt: a receiver that trickles its answer a byte at a time cannot hold the
        # worker past it (the socket's own timeout bounds each read only).
        aborted = threading.Event()
        timer = threading.Timer(left, _abort, args=(connection, aborted))
        timer.daemon = True
        timer.start()
        try:
            connection.request("POST", path, body=body, headers=sent)
            response = connection.getresponse()
            status = response.status
            if aborted.is_set():  # cut off at the deadline: what was read of the answer may be any part of it
                raise TimeoutError("the attempt's deadline passed")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failure = "timed out" if isinstance(exc, TimeoutError) or time.monotonic() >= deadline else \
                f"connection failed ({type(exc).__name__})"
            logger.info("webhook: POST %s via %s failed: %r", url_for_log(url), address, exc)
            continue
        finally:
            timer.cancel()
            connection.close()
        if 200 <= status < 300:
            return PostResult(True, status)
        if 300 <= status < 400:
            return PostResult(False, status, f"HTTP {status}: redirects are not followed")
        return PostResult(False, status, f"HTTP {status}")
    return PostResult(False, None, failure)


def _abort(connection: http.client.HTTPConnection, aborted: threading.Event) -> None:
    aborted.set()
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
