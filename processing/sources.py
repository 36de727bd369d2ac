"""Which network sources a job may open: http/https only, allowed hosts, no private ranges. No Django here.

The API checks the URL as written (`check_source_url(..., resolve=False)`). The worker never lets FFmpeg open
a URL: processing.fetch checks every hop (redirects included) with `check_source_url(..., resolve=False)` and
`allowed_addresses`, and connects to exactly the addresses it checked, so a DNS answer that changes between the
check and the connection (rebinding) cannot take it elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# socket.getaddrinfo's signature: (host, port) -> [(family, type, proto, canonname, sockaddr), ...]
Resolver = Callable[..., list[tuple[Any, ...]]]


class SourceNotAllowed(ValueError):
    """The URL may not be opened; `reason` is one of "invalid", "scheme", "host", "private", "unresolvable"."""

    def __init__(self, reason: str, message: str, host: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.host = host


def literal_address(host: str) -> Address | None:
    """The address a host names literally, including the legacy IPv4 forms resolvers accept
    ("127.1", "2130706433", "0x7f000001", "0177.0.0.1"); None for a DNS name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def check_source_url(url: str, *, allowed_hosts: list[str], allow_private: bool, resolve: bool,
                     allowed_networks: Sequence[Network] = ()) -> str:
    """The URL's host, if the URL may be opened; raises SourceNotAllowed otherwise.

    `allowed_networks` are networks allowed although private (an operator's internal receivers, loopback in
    tests): a name such as `localhost` is then judged by the addresses it resolves to, not refused by name."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError as exc:
        raise SourceNotAllowed("invalid", "not a valid URL") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceNotAllowed("scheme", "only http and https URLs with a host are allowed")
    host = parts.hostname.rstrip(".")  # "localhost." is "localhost" to a resolver
    if allowed_hosts and host not in allowed_hosts:
        raise SourceNotAllowed("host", f"host {host} is not in the allowed list", host)
    if allow_private:
        return host
    if (host == "localhost" or host.endswith(".localhost")) and not allowed_networks:
        raise SourceNotAllowed("private", "private, loopback and link-local hosts are not allowed", host)
    literal = literal_address(host)
    if literal is not None:
        _refuse_private(host, [literal], allowed_networks)
    elif resolve:
        allowed_addresses(host, parts.port or (443 if parts.scheme == "https" else 80), allow_private=False,
                          allowed_networks=allowed_networks)
    return host


def allowed_addresses(host: str, port: int, *, allow_private: bool,
                      resolver: Resolver = socket.getaddrinfo,
                      allowed_networks: Sequence[Network] = ()) -> list[Address]:
    """The addresses `host` resolves to, in the resolver's order and without repeats, if every one of them is
    allowed (a name with one private address among public ones is refused as a whole); raises SourceNotAllowed."""
    literal = literal_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = resolver(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise SourceNotAllowed("unresolvable", f"host {host} cannot be resolved: {exc}", host) from exc
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not addresses:
            raise SourceNotAllowed("unresolvable", f"host {host} cannot be resolved", host)
    if not allow_private:
        _refuse_private(host, addresses, allowed_networks)
    return addresses


def _refuse_private(host: str, addresses: list[Address], allowed_networks: Sequence[Network] = ()) -> None:
    def allowed(address: Address) -> bool:
        return address.is_global or any(address.version == network.version and address in network
                                        for network in allowed_networks)

    if not all(allowed(address) for address in addresses):
        raise SourceNotAllowed("private", "private, loopback and link-local hosts are not allowed", host)
