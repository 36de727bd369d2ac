"""Fetching an archive's `url` into a local spool file, every connection checked against the url policy.
No Django here.

FFmpeg never opens a URL in a job: it would resolve the host again (DNS rebinding), follow redirects anywhere,
and its errors ("Connection refused", "End of file", "404") would tell a user what answers on an address the
worker can reach. Here each hop's host is checked (processing.sources), resolved once, every address checked, and
the connection made to the checked address only (TLS still verifies the certificate against the host name).
Redirects are followed here, each target checked the same way, up to `max_redirects`. The body goes into a
file of at most `max_bytes`, which the decoder then opens as a local file.

Failures a user sees: the first URL's own policy errors (SourceNotAllowed, as the API would have said), then
`source_not_allowed` for a redirect the policy refuses, `source_too_many_redirects`, `source_too_large`, and one
`source_unreachable` for every network or HTTP failure, which never says why (the worker's log does).
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit, urlunsplit

from processing.errors import CodedError
from processing.sources import Address, Resolver, SourceNotAllowed, allowed_addresses, check_source_url

logger = logging.getLogger(__name__)

REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 1024 * 1024
USER_AGENT = "findface-videos"


@dataclass(frozen=True)
class FetchPolicy:
    """Where a fetch may connect and how much it may take."""

    allowed_hosts: tuple[str, ...] = ()  # empty: any host the address policy allows
    allow_private: bool = False  # private, loopback and link-local addresses too
    max_bytes: int = 8 * 1024**3
    max_redirects: int = 5
    # Seconds to connect, and then for each read: a server that stops sending ends the fetch.
    timeout: float = 15.0
    spool_dir: str = ""  # "": the system's temporary directory
    resolver: Resolver = socket.getaddrinfo
    ssl_context: ssl.SSLContext | None = None  # None: the system's CAs, host name checked


class FetchError(CodedError):
    """The source could not be fetched (`code` of processing.errors.MESSAGES)."""


class FetchStopped(Exception):
    """The fetch was asked to stop (the job was stopped, or the decoder thread abandoned)."""


def is_remote(source: object) -> bool:
    """An http(s) url to fetch (a path or a file object is not)."""
    return isinstance(source, str) and source.startswith(("http://", "https://"))


@contextmanager
def spooled(url: str, policy: FetchPolicy, *, should_stop: Callable[[], bool] = lambda: False,
            on_data: Callable[[], None] = lambda: None) -> Iterator[Path]:
    """The source fetched into a spool file, which is removed when the block ends, however it ends."""
    fd, name = tempfile.mkstemp(prefix="ffv-fetch-", suffix=".video", dir=policy.spool_dir or None)
    try:
        with os.fdopen(fd, "wb") as out:
            fetch(url, out, policy, should_stop=should_stop, on_data=on_data)
        yield Path(name)
    finally:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def fetch(url: str, out: BinaryIO, policy: FetchPolicy, *, should_stop: Callable[[], bool] = lambda: False,
          on_data: Callable[[], None] = lambda: None) -> int:
    """Write the body `url` leads to (redirects followed) into `out`; returns its size in bytes.

    Raises SourceNotAllowed for the first URL, FetchError afterwards, FetchStopped when `should_stop` says so.
    """
    seen: set[str] = set()
    hop = 0
    while True:
        if should_stop():
            raise FetchStopped
        seen.add(url)
        response, connection = _open(url, policy, first=hop == 0)
        try:
            if response.status in REDIRECTS:
                location = response.getheader("Location")
                if not location:
                    logger.info("fetch: %s answered %s without Location", url_for_log(url), response.status)
                    raise FetchError("source_unreachable")
                target = _without_fragment(urljoin(url, location.strip()))
                hop += 1
                if hop > policy.max_redirects or target in seen:
                    raise FetchError("source_too_many_redirects", limit=policy.max_redirects)
                logger.info("fetch: %s redirects to %s", url_for_log(url), url_for_log(target))
                url = target
                continue
            if response.status != 200:
                logger.info("fetch: %s answered %s", url_for_log(url), response.status)
                raise FetchError("source_unreachable")
            return _copy_body(response, out, policy, should_stop=should_stop, on_data=on_data)
        finally:
            connection.close()


def _open(url: str, policy: FetchPolicy, *, first: bool) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
    """A GET of `url` on a connection to an address the policy allows; the response's headers are read."""
    parts = urlsplit(url)
    try:
        host = check_source_url(url, allowed_hosts=list(policy.allowed_hosts), allow_private=policy.allow_private,
                                resolve=False)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = allowed_addresses(host, port, allow_private=policy.allow_private, resolver=policy.resolver)
    except SourceNotAllowed as exc:
        if first:
            raise  # the URL the user gave: the API's own reasons (url_private, url_host...)
        logger.info("fetch: redirect to %s refused (%s)", url_for_log(url), exc)
        if exc.reason == "unresolvable":
            raise FetchError("source_unreachable") from None
        raise FetchError("source_not_allowed") from None
    path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
    failure: BaseException | None = None
    for address in addresses:
        if parts.scheme == "https":
            context = policy.ssl_context or ssl.create_default_context()
            connection: http.client.HTTPConnection = PinnedHTTPSConnection(host, port, address, policy.timeout,
                                                                            context)
        else:
            connection = PinnedHTTPConnection(host, port, address, policy.timeout)
        try:
            connection.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                                                     "Accept": "*/*"})
            return connection.getresponse(), connection
        except (OSError, http.client.HTTPException, ValueError) as exc:
            connection.close()
            failure = exc
            logger.info("fetch: %s via %s failed: %r", url_for_log(url), address, exc)
    # Whatever the network said (refused, reset, timed out, closed, a bad certificate): one code, no detail.
    raise FetchError("source_unreachable") from failure.with_traceback(None) if failure else None


def _copy_body(response: http.client.HTTPResponse, out: BinaryIO, policy: FetchPolicy, *,
               should_stop: Callable[[], bool], on_data: Callable[[], None]) -> int:
    declared = response.getheader("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > policy.max_bytes:
        raise FetchError("source_too_large", limit=policy.max_bytes)
    size = 0
    while True:
        if should_stop():
            raise FetchStopped
        try:
            chunk = response.read1(CHUNK)  # whatever has arrived: stop requests and the watchdog see progress
        except (OSError, http.client.HTTPException, ValueError) as exc:
            logger.info("fetch: reading the body failed after %d bytes: %r", size, exc)
            raise FetchError("source_unreachable") from None
        if not chunk:
            if response.length:  # read1 does not raise IncompleteRead: fewer bytes than Content-Length said
                logger.info("fetch: the body ended %d bytes short", response.length)
                raise FetchError("source_unreachable")
            return size
        size += len(chunk)
        if size > policy.max_bytes:
            raise FetchError("source_too_large", limit=policy.max_bytes)
        out.write(chunk)
        on_data()


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to `address`, whatever `host` resolves to now; `host` still goes in the Host header."""

    def __init__(self, host: str, port: int, address: Address, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self._address), self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class PinnedHTTPSConnection(PinnedHTTPConnection):
    """TLS on the pinned connection: SNI and the certificate check are for `host`, not the address."""

    default_port = 443

    def __init__(self, host: str, port: int, address: Address, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, address, timeout)
        self._context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def _without_fragment(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, parts.query, ""))


def url_for_log(url: str) -> str:
    """The URL without its query and credentials (tokens live there), for the worker's log."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
    except ValueError:
        return "(invalid url)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
