"""Failed-login throttling of `POST /auth/login/`, per client address and per username.

Each attempt with credentials is counted as a failure BEFORE its password is hashed, and refunded when it
succeeds; past the limit of either count in the current window the login answers 429 with `Retry-After` without
hashing anything. So a throttled guess costs the server one small query instead of a password hash (the CPU an
attacker would otherwise take from everyone), and it tells nothing: the right password gets the same 429.

The window of a count starts at its first failure and lasts FFV_LOGIN_THROTTLE_WINDOW_SECONDS; the count is then
forgotten. A successful login clears its username's count (the user is back) but only refunds its own attempt to
the address's count, so one known password cannot clear an address's failures on other usernames.

The per-user limit exists against guessing from many addresses; it also lets anyone lock a username out for one
window. That is why it is higher than the per-address limit (one address alone can never lock a user out) and
the window short. Counts live in the database (LoginThrottle), shared by all web worker processes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import ngettext

from videos.errors import TooManyRequests
from videos.models import LoginThrottle


@dataclass(frozen=True)
class LoginAttempt:
    address_key: str
    user_key: str


def _parse_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted_proxy(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return any(address in ipaddress.ip_network(proxy, strict=False) for proxy in settings.FFV_TRUSTED_PROXIES)


def client_address(request: Any) -> str:
    """The client's address: REMOTE_ADDR, or, when that is a trusted proxy, the last X-Forwarded-For hop that is
    not one. A client writes what it likes into X-Forwarded-For, so only what trusted proxies appended counts.

    An IPv6 client counts as its /64 (one host usually holds a whole /64).
    """
    remote = request.META.get("REMOTE_ADDR", "") or ""
    address = _parse_address(remote)
    if address is None:
        return remote  # a unix socket or an odd server: one key for all of them
    if _is_trusted_proxy(address):
        hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
        for hop in reversed(hops):
            hop_address = _parse_address(hop)
            if hop_address is None:
                break  # not written by a proxy of ours: stop at the last hop we trust
            address = hop_address
            if not _is_trusted_proxy(address):
                break
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _key(scope: str, value: str) -> str:
    # Hashed: fixed length, and a password typed into the username field is not kept in clear.
    return hashlib.sha256(f"{scope}:{value}".encode()).hexdigest()


def _username_key(username: str) -> str:
    # One count for the spellings one account may be looked up by (case, Unicode forms).
    return _key("user", unicodedata.normalize("NFKC", username).casefold())


def _limits(attempt: LoginAttempt) -> dict[str, int]:
    return {
        attempt.address_key: settings.FFV_LOGIN_FAILURES_PER_ADDRESS,
        attempt.user_key: settings.FFV_LOGIN_FAILURES_PER_USER,
    }


def _window() -> timedelta:
    return timedelta(seconds=settings.FFV_LOGIN_THROTTLE_WINDOW_SECONDS)


def _throttled(wait: timedelta) -> TooManyRequests:
    seconds = max(1, math.ceil(wait.total_seconds()))
    return TooManyRequests(
        ngettext(
            "Too many failed login attempts. Try again in %(seconds)d second.",
            "Too many failed login attempts. Try again in %(seconds)d seconds.",
            seconds,
        ) % {"seconds": seconds},
        wait=seconds,
    )


def _count_failure(key: str, now: datetime) -> tuple[int, datetime]:
    """Adds one failure to the key's count, in a new window when the last one is over: (count, window start)."""
    with transaction.atomic():
        row, created = LoginThrottle.objects.select_for_update().get_or_create(
            key=key, defaults={"failures": 1, "window_start": now}
        )
        if created:
            return row.failures, row.window_start
        if row.window_start <= now - _window():
            row.failures, row.window_start = 1, now
        else:
            row.failures += 1
        row.save(update_fields=["failures", "window_start"])
        return row.failures, row.window_start


def login_attempt_begin(*, username: str, address: str) -> LoginAttempt:
    """Counts a login attempt as failed until `login_attempt_succeeded`; raises TooManyRequests past a limit.

    Call it before checking the password: the point is not to hash it.
    """
    attempt = LoginAttempt(address_key=_key("addr", address), user_key=_username_key(username))
    limits = _limits(attempt)
    now = timezone.now()
    window_open = now - _window()
    # Under attack most attempts end here: one read, no write, no hash.
    waits = [
        row.window_start + _window() - now
        for row in LoginThrottle.objects.filter(key__in=limits, window_start__gt=window_open)
        if row.failures >= limits[row.key]
    ]
    if waits:
        raise _throttled(max(waits))
    # Counts whose window is over are of no use; this keeps the table as small as one window's attempts.
    LoginThrottle.objects.filter(window_start__lte=window_open).delete()
    # Counted before hashing, so concurrent guesses cannot all pass the check above before any of them failed.
    # The address first, and a guess past its limit stops there: however many guesses of one address arrive at
    # once, they add at most the address's limit to a user's count, so one address cannot lock a user out.
    for key, limit in limits.items():
        failures, window_start = _count_failure(key, now)
        if failures > limit:
            raise _throttled(window_start + _window() - now)
    return attempt


def login_attempt_succeeded(attempt: LoginAttempt) -> None:
    LoginThrottle.objects.filter(key=attempt.user_key).delete()
    LoginThrottle.objects.filter(key=attempt.address_key, failures__gt=0).update(failures=F("failures") - 1)
